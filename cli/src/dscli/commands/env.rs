//! Session commands that need no daemon: `setenv`, `showenv`, `help`.

use crate::dscli::messages::{self, exit};
use crate::dscli::report::{Report, Style};
use crate::dscli::session::{Res, Session};
use crate::dscli::settings::{Format, Layer};
use crate::dscli::verb::{self, Invocation};
use crate::dscli::{general_help, ids};

pub fn setenv(s: &mut Session, inv: &Invocation) -> Res {
    for flag in ["-dev", "-remotedev"] {
        if let Some(v) = inv.flag(flag)
            && let Err(e) = ids::image(v)
        {
            s.out.line(&messages::MALFORMED_ID.line(inv.verb.name, &[&e.token, e.what]))?;
            return Ok(exit::SYNTAX);
        }
    }
    s.settings.setenv = Layer::from_setenv(inv).over(&s.settings.setenv);
    Ok(exit::OK)
}

fn on(b: bool) -> String {
    if b { "on".into() } else { "off".into() }
}

pub fn showenv(s: &mut Session, _inv: &Invocation) -> Res {
    let e = s.settings.effective(None);
    let mut r = Report::new(
        "Environment",
        &["banner", "header", "format", "delim", "verbose", "paging", "rows", "fullid", "devid", "remotedevid"],
    );
    let img = |i: Option<flashtrack::id::ImageId>| i.map(|i| i.to_string()).unwrap_or_else(|| "-".into());
    r.push(vec![
        on(e.banner),
        on(e.header),
        e.format.name().into(),
        e.delim.to_string(),
        on(e.verbose),
        on(e.paging),
        e.rows.to_string(),
        on(e.fullid),
        img(e.devid),
        img(e.remotedevid),
    ]);
    s.out.text(&r.render(Style { format: Format::Stanza, delim: ',', header: true }))?;
    Ok(exit::OK)
}

pub fn help(s: &mut Session, inv: &Invocation) -> Res {
    let Some(name) = inv.ids.first() else {
        s.out.text(&general_help())?;
        return Ok(exit::OK);
    };
    match verb::find(name) {
        Some(v) => {
            s.out.text(&v.usage())?;
            Ok(exit::OK)
        }
        None => {
            s.out.line(&messages::UNKNOWN_COMMAND.line("help", &[name]))?;
            Ok(exit::SYNTAX)
        }
    }
}
