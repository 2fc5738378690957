//! Command families, one file each, and the helpers they share: ID checks, the LSS range
//! check (after the image is known), report output and per-object outcome lines.

pub mod env;
pub mod flash;
pub mod flash_list;
pub mod hosts;
pub mod link;
pub mod lss;
pub mod pool;
pub mod pprc;
pub mod pprc_list;
pub mod pprc_pairs;
pub mod remote_flash;
pub mod system;
pub mod volume;

use super::ids::{IdError, Scoped};
use super::messages::{self, exit};
use super::report::{Report, Style};
use super::session::{Res, Session};
use super::settings::Format;
use super::verb::Invocation;
use flashtrack::control::{ItemOutcome, Response};
use flashtrack::id::{ImageId, LssId};

/// Runs a checked invocation.
pub fn run(s: &mut Session, inv: &Invocation) -> Res {
    match inv.verb.name {
        "mkextpool" => pool::mkextpool(s, inv),
        "lsextpool" | "showextpool" => pool::list(s, inv),
        "rmextpool" => pool::rmextpool(s, inv),
        "mkfbvol" | "mkckdvol" => volume::make(s, inv),
        "lsfbvol" | "lsckdvol" | "showfbvol" | "showckdvol" => volume::list(s, inv),
        "chfbvol" | "chckdvol" => volume::change(s, inv),
        "rmfbvol" | "rmckdvol" => volume::remove(s, inv),
        "mklcu" => lss::mklcu(s, inv),
        "lslcu" | "lslss" => lss::list(s, inv),
        "rmlcu" => lss::rmlcu(s, inv),
        "lssi" | "showsi" => system::images(s, inv),
        "lsioport" => system::ioports(s, inv),
        "mkflash" | "resyncflash" | "reverseflash" | "setflashrevertible" => flash::establish(s, inv),
        "rmflash" => flash::remove(s, inv),
        "commitflash" | "revertflash" => flash::commit_revert(s, inv),
        "unfreezeflash" => flash::unfreeze(s, inv),
        "lsflash" => flash_list::list(s, inv),
        "mkremoteflash" | "resyncremoteflash" | "reverseremoteflash" | "setremoteflashrevertible" => {
            remote_flash::establish(s, inv)
        }
        "rmremoteflash" => remote_flash::remove(s, inv),
        "commitremoteflash" | "revertremoteflash" => remote_flash::commit_revert(s, inv),
        "lsremoteflash" => remote_flash::list(s, inv),
        "mkvolgrp" => hosts::mkvolgrp(s, inv),
        "lsvolgrp" | "showvolgrp" => hosts::list_volgrps(s, inv),
        "chvolgrp" => hosts::chvolgrp(s, inv),
        "rmvolgrp" => hosts::rmvolgrp(s, inv),
        "mkhostconnect" => hosts::mkhostconnect(s, inv),
        "lshostconnect" | "showhostconnect" => hosts::list_hosts(s, inv),
        "chhostconnect" => hosts::chhostconnect(s, inv),
        "rmhostconnect" => hosts::rmhostconnect(s, inv),
        "mkpprcpath" => pprc::mkpprcpath(s, inv),
        "lspprcpath" => pprc::lspprcpath(s, inv),
        "rmpprcpath" => pprc::rmpprcpath(s, inv),
        "mkpprc" | "resumepprc" | "failoverpprc" | "failbackpprc" => pprc_pairs::establish(s, inv),
        "lspprc" => pprc_list::list(s, inv),
        "pausepprc" => pprc_pairs::pause(s, inv),
        "rmpprc" => pprc_pairs::remove(s, inv),
        "freezepprc" | "unfreezepprc" => pprc_pairs::freeze(s, inv),
        "ver" => system::ver(s, inv),
        "setenv" => env::setenv(s, inv),
        "showenv" => env::showenv(s, inv),
        "help" => env::help(s, inv),
        "lslink" => link::lslink(s, inv),
        "chlink" => link::chlink(s, inv),
        other => unreachable!("verb {other} is in the table but has no handler"),
    }
}

/// Parsed IDs, or the malformed-ID message (exit 2).
pub fn ids<T>(s: &mut Session, inv: &Invocation, parsed: Result<Vec<Scoped<T>>, IdError>) -> Res<Vec<Scoped<T>>> {
    parsed.or_else(|e| bad_id(s, inv, e))
}

/// The message for an ID that does not parse (exit 2).
pub fn bad_id<T>(s: &mut Session, inv: &Invocation, e: IdError) -> Res<T> {
    let line = if e.what == super::ids::RANGE_LENGTHS {
        messages::PAIR_RANGE.line(inv.verb.name, &[&e.token])
    } else {
        messages::MALFORMED_ID.line(inv.verb.name, &[&e.token, e.what])
    };
    s.fail(line, exit::SYNTAX)
}

/// The image from fully qualified IDs (at most one) or the usual fallbacks.
pub fn image_of<T>(s: &mut Session, inv: &Invocation, ids: &[Scoped<T>]) -> Res<ImageId> {
    let from = match super::ids::common_image(ids) {
        Ok(i) => i,
        Err((a, b)) => {
            return s
                .fail(messages::IMAGE_CONFLICT.line(inv.verb.name, &[&a.to_string(), &b.to_string()]), exit::SYNTAX);
        }
    };
    s.image(inv, from)
}

/// Refuses LSSs beyond the machine type's range (1750: 00-1F, 2107: 00-FE).
pub fn check_lss(s: &mut Session, inv: &Invocation, image: &ImageId, lss: impl IntoIterator<Item = LssId>) -> Res<()> {
    let max = image.machine.max_lss();
    if let Some(bad) = lss.into_iter().find(|l| l.0 > max) {
        let args = [image.to_string(), bad.to_string(), image.machine.code().to_string(), format!("{max:02X}")];
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        return s.fail(messages::LSS_RANGE.line(inv.verb.name, &args), exit::SYNTAX);
    }
    Ok(())
}

/// Prints a report, or the not-found line when it is empty (exit 0). `show` reports are
/// stanzas unless another format was asked for.
pub fn print_report(s: &mut Session, inv: &Invocation, report: &Report, show: bool) -> Res {
    let verb = inv.verb.name;
    if report.rows.is_empty() {
        s.out.line(&messages::NOT_FOUND.line(verb, &[messages::object_name(verb)]))?;
        return Ok(exit::OK);
    }
    let e = s.effective(inv);
    let format = if show && e.format == Format::Default { Format::Stanza } else { e.format };
    let text = report.render(Style { format, delim: e.delim, header: e.header });
    s.out.text(&text)?;
    Ok(exit::OK)
}

/// Per-object outcome lines; returns the code of the last failure (0 if none).
pub fn outcomes(s: &mut Session, verb: &str, items: &[ItemOutcome]) -> Res {
    let mut last = exit::OK;
    for item in items {
        match &item.result {
            Ok(()) => s.out.line(&messages::success(verb).line(verb, &[&item.object]))?,
            Err(e) => {
                let (line, code) = messages::engine_line(verb, e);
                s.out.line(&line)?;
                last = code;
            }
        }
    }
    Ok(last)
}

/// A response to a multi-object request as outcomes: `Items` as is, `Done` as success for
/// every object, `Err` as a failure of the first object (the request failed as a whole).
pub fn as_items(resp: Response, objects: &[String]) -> Result<Vec<ItemOutcome>, String> {
    match resp {
        Response::Ok(flashtrack::control::Reply::Items(items)) => Ok(items),
        Response::Ok(flashtrack::control::Reply::Done) => {
            Ok(objects.iter().map(|o| ItemOutcome { object: o.clone(), result: Ok(()) }).collect())
        }
        Response::Err(mut e) => {
            if e.object.is_empty() {
                e.object = objects.first().cloned().unwrap_or_default();
            }
            Ok(vec![ItemOutcome { object: e.object.clone(), result: Err(e) }])
        }
        Response::Ok(other) => Err(format!("{other:?}")),
    }
}

/// Sends a multi-object request and prints one line per object.
pub fn act(s: &mut Session, inv: &Invocation, req: flashtrack::control::Request, objects: &[String]) -> Res {
    let verb = inv.verb.name;
    let resp = s.request(verb, req)?;
    match as_items(resp, objects) {
        Ok(items) => outcomes(s, verb, &items),
        Err(what) => s.fail(messages::PROTOCOL.line(verb, &[&what]), exit::CONNECTION),
    }
}

/// The rm verbs' loop: object by object in input order, ask (unless `-quiet`), then act;
/// the exit code is the last failing object's (see the module docs).
pub fn remove_each(s: &mut Session, inv: &Invocation, each: Vec<(String, flashtrack::control::Request)>) -> Res {
    let mut last = exit::OK;
    for (obj, req) in each {
        if confirmed(s, inv, vec![obj.clone()])?.is_empty() {
            continue;
        }
        let code = act(s, inv, req, &[obj])?;
        if code != exit::OK {
            last = code;
        }
    }
    Ok(last)
}

/// Asks for each object unless `-quiet`; returns those confirmed, in order.
pub fn confirmed(s: &mut Session, inv: &Invocation, objects: Vec<String>) -> Res<Vec<String>> {
    let verb = inv.verb.name;
    let Some(msg) = messages::confirm(verb) else {
        return Ok(objects);
    };
    if inv.has("-quiet") {
        return Ok(objects);
    }
    let mut keep = Vec::new();
    for o in objects {
        if s.confirm(verb, msg, &o)? {
            keep.push(o);
        }
    }
    Ok(keep)
}

/// Formats bytes in units of `unit` with one decimal (DS CLI capacity columns).
pub fn one_decimal(bytes: u64, unit: f64) -> String {
    format!("{:.1}", bytes as f64 / unit)
}
