//! Storage images and ports: `lssi`, `showsi`, `lsioport`, and `ver`.

use super::{bad_id, ids, image_of, print_report};
use crate::dscli::banner::VERSION;
use crate::dscli::ids::Scoped;
use crate::dscli::messages::{self, exit};
use crate::dscli::report::{Report, Style, dash};
use crate::dscli::session::{Res, Session};
use crate::dscli::settings::Format;
use crate::dscli::verb::Invocation;
use flashtrack::control::{ImageView, IoPortView, Reply, Request};
use flashtrack::id::ImageId;

fn image_ids(s: &mut Session, inv: &Invocation) -> Res<Vec<ImageId>> {
    let parsed: Result<Vec<Scoped<()>>, _> =
        inv.ids.iter().map(|t| crate::dscli::ids::image(t).map(|i| Scoped { image: Some(i), id: () })).collect();
    Ok(ids(s, inv, parsed)?.into_iter().filter_map(|x| x.image).collect())
}

pub fn si_report(views: &[&ImageView], long: bool, show: bool) -> Report {
    let mut cols = vec!["Name", "ID", "Storage Unit", "Model", "WWNN", "State", "ESSNet"];
    if long || show {
        cols.extend(["Volume Group", "desc"]);
    }
    if show {
        cols.push("numvols");
    }
    let mut r = Report::new("StorageImage", &cols);
    for v in views {
        let mut row = vec![
            dash(v.name.clone()),
            v.id.to_string(),
            v.unit.clone(),
            v.model.clone(),
            v.wwnn.clone(),
            v.state.clone(),
            "Enabled".into(),
        ];
        if long || show {
            row.extend(["-".into(), "-".into()]);
        }
        if show {
            row.push(v.volumes.to_string());
        }
        r.push(row);
    }
    r
}

pub fn images(s: &mut Session, inv: &Invocation) -> Res {
    let verb = inv.verb.name;
    let show = verb == "showsi";
    let mut wanted = image_ids(s, inv)?;
    if show {
        let scoped: Vec<Scoped<()>> = wanted.iter().map(|i| Scoped { image: Some(i.clone()), id: () }).collect();
        wanted = vec![image_of(s, inv, &scoped)?];
        s.banner(inv, wanted.first())?;
    } else {
        let dev = s.effective(inv).devid;
        s.banner(inv, dev.as_ref())?;
    }
    let list = match s.query(verb, Request::ImageList)? {
        Reply::Images(l) => l,
        other => return s.protocol(verb, &other),
    };
    let mut views: Vec<&ImageView> = list.iter().filter(|v| wanted.is_empty() || wanted.contains(&v.id)).collect();
    views.sort_by(|a, b| a.id.cmp(&b.id));
    if show && views.is_empty() {
        let err = flashtrack::Error::new(flashtrack::ErrorKind::ImageNotFound, &wanted[0], "");
        let (line, code) = messages::engine_line(verb, &err);
        s.out.line(&line)?;
        return Ok(code);
    }
    let r = si_report(&views, inv.has("-l"), show);
    let r = if inv.has("-s") { r.short("ID") } else { r };
    print_report(s, inv, &r, show)
}

pub fn ioport_report(views: &[&IoPortView]) -> Report {
    let mut r = Report::new("IOPort", &["ID", "WWPN", "State", "Type", "topo", "portgrp"]);
    for p in views {
        r.push(vec![
            p.id.clone(),
            p.wwpn.clone(),
            p.state.clone(),
            "Fibre Channel-SW".into(),
            "SCSI-FCP".into(),
            "0".into(),
        ]);
    }
    r
}

pub fn ioports(s: &mut Session, inv: &Invocation) -> Res {
    let verb = inv.verb.name;
    let wanted = crate::dscli::ids::ioports(inv.ids.iter().map(String::as_str)).or_else(|e| bad_id(s, inv, e))?;
    let none: [Scoped<()>; 0] = [];
    let image = image_of(s, inv, &none)?;
    s.banner(inv, Some(&image))?;
    let list = match s.query(verb, Request::IoPortList { image })? {
        Reply::IoPorts(l) => l,
        other => return s.protocol(verb, &other),
    };
    let views: Vec<&IoPortView> = list.iter().filter(|p| wanted.is_empty() || wanted.contains(&p.id)).collect();
    let r = ioport_report(&views);
    let r = if inv.has("-s") { r.short("ID") } else { r };
    print_report(s, inv, &r, false)
}

/// `ver`: `DSCLI <version>`; `-l` adds flashd's version and protocol as a stanza.
pub fn ver(s: &mut Session, inv: &Invocation) -> Res {
    if !inv.has("-l") {
        s.out.line(&format!("DSCLI {VERSION}"))?;
        return Ok(exit::OK);
    }
    let hello = s.hello(inv.verb.name)?;
    let mut r = Report::new("Version", &["DSCLI", "flashd", "protocol", "io backend"]);
    r.push(vec![VERSION.into(), hello.daemon_version, hello.protocol.to_string(), hello.io_backend]);
    s.out.text(&r.render(Style { format: Format::Stanza, delim: ',', header: true }))?;
    Ok(exit::OK)
}

#[cfg(test)]
mod tests {
    use super::*;
    use flashtrack::id::MachineType;

    #[test]
    fn lssi_columns() {
        let id: ImageId = "IBM.2107-75FA121".parse().unwrap();
        let v = ImageView {
            id: id.clone(),
            machine: MachineType::Ds8000,
            name: String::new(),
            unit: id.unit(),
            model: "961".into(),
            wwnn: "5005076303FFC123".into(),
            state: "Online".into(),
            created: 0,
            volumes: 0,
        };
        let r = si_report(&[&v], true, false);
        assert_eq!(r.columns.join("|"), "Name|ID|Storage Unit|Model|WWNN|State|ESSNet|Volume Group|desc");
        assert_eq!(r.rows[0].join("|"), "-|IBM.2107-75FA121|IBM.2107-75FA120|961|5005076303FFC123|Online|Enabled|-|-");
        let p = IoPortView {
            id: "I0000".into(),
            wwpn: "50050763080011AB".into(),
            state: "Communication established".into(),
        };
        let text = ioport_report(&[&p]).render(Style { format: Format::Default, delim: ',', header: true });
        assert_eq!(
            text,
            "ID    WWPN             State                     Type             topo     portgrp\n\
             ==================================================================================\n\
             I0000 50050763080011AB Communication established Fibre Channel-SW SCSI-FCP 0\n"
        );
    }
}
