//! The column model of every report and its five renderings: `default` (aligned table),
//! `delim`, `stanza`, `xml` (CIM-like, IBM's structure is [R]) and `json` (extension).
//! `show*` commands are reports with one row rendered as stanza by default.

use super::settings::Format;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// CIM-like class name for xml (`FBVolume`).
    pub class: &'static str,
    pub columns: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

/// How to render.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Style {
    pub format: Format,
    pub delim: char,
    pub header: bool,
}

/// A value that is not applicable prints as `-` (DS CLI convention).
pub fn dash(s: impl Into<String>) -> String {
    let s = s.into();
    if s.is_empty() { "-".into() } else { s }
}

impl Report {
    pub fn new(class: &'static str, columns: &[&str]) -> Report {
        Report { class, columns: columns.iter().map(|c| c.to_string()).collect(), rows: Vec::new() }
    }

    pub fn push(&mut self, row: Vec<String>) {
        debug_assert_eq!(row.len(), self.columns.len());
        self.rows.push(row);
    }

    /// Keeps only the first column (`-s`).
    pub fn short(mut self, column: &str) -> Report {
        let i = self.columns.iter().position(|c| c == column).unwrap_or(0);
        self.columns = vec![self.columns[i].clone()];
        for r in &mut self.rows {
            *r = vec![r[i].clone()];
        }
        self
    }

    /// The body text, every line ending in `\n`.
    pub fn render(&self, style: Style) -> String {
        match style.format {
            Format::Default => self.table(None, style.header),
            Format::Delim => self.table(Some(style.delim), style.header),
            Format::Stanza => self.stanza(),
            Format::Xml => self.xml(),
            Format::Json => self.json(),
        }
    }

    fn table(&self, delim: Option<char>, header: bool) -> String {
        let widths: Vec<usize> = (0..self.columns.len())
            .map(|i| {
                self.rows
                    .iter()
                    .map(|r| r[i].chars().count())
                    .chain([self.columns[i].chars().count()])
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let join = |cells: &[String]| -> String {
            let line = match delim {
                Some(d) => cells.join(&d.to_string()),
                None => cells.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect::<Vec<_>>().join(" "),
            };
            line.trim_end().to_string()
        };
        let mut lines: Vec<String> = Vec::new();
        if header {
            lines.push(join(&self.columns));
        }
        let rows: Vec<String> = self.rows.iter().map(|r| join(r)).collect();
        let widest = lines.iter().chain(&rows).map(|l| l.chars().count()).max().unwrap_or(0);
        if header {
            lines.push("=".repeat(widest));
        }
        lines.extend(rows);
        lines.into_iter().map(|l| l + "\n").collect()
    }

    fn stanza(&self) -> String {
        let w = self.columns.iter().map(|c| c.chars().count()).max().unwrap_or(0);
        let blocks: Vec<String> = self
            .rows
            .iter()
            .map(|r| {
                self.columns
                    .iter()
                    .zip(r)
                    .map(|(c, v)| format!("{c:<w$} {v}").trim_end().to_string() + "\n")
                    .collect::<String>()
            })
            .collect();
        blocks.join("\n")
    }

    fn xml(&self) -> String {
        let mut s = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<IRETURNVALUE>\n");
        for r in &self.rows {
            s.push_str(&format!("<INSTANCE CLASSNAME=\"{}\">\n", xml_escape(self.class)));
            for (c, v) in self.columns.iter().zip(r) {
                s.push_str(&format!(
                    "<PROPERTY NAME=\"{}\" TYPE=\"string\"><VALUE>{}</VALUE></PROPERTY>\n",
                    xml_escape(c),
                    xml_escape(v)
                ));
            }
            s.push_str("</INSTANCE>\n");
        }
        s.push_str("</IRETURNVALUE>\n");
        s
    }

    fn json(&self) -> String {
        let q = |s: &str| serde_json::to_string(s).expect("strings always serialise");
        let objs: Vec<String> = self
            .rows
            .iter()
            .map(|r| {
                let fields: Vec<String> =
                    self.columns.iter().zip(r).map(|(c, v)| format!("{}:{}", q(c), q(v))).collect();
                format!("{{{}}}", fields.join(","))
            })
            .collect();
        format!("[{}]\n", objs.join(",\n "))
    }
}

fn xml_escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&apos;"),
            c => o.push(c),
        }
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Report {
        let mut r = Report::new("FBVolume", &["Name", "ID", "cap (2^30B)"]);
        r.push(vec!["a<b>".into(), "1000".into(), "10.0".into()]);
        r.push(vec!["longer_name".into(), "1001".into(), "-".into()]);
        r
    }

    fn st(format: Format) -> Style {
        Style { format, delim: ',', header: true }
    }

    #[test]
    fn default_table() {
        assert_eq!(
            sample().render(st(Format::Default)),
            "Name        ID   cap (2^30B)\n\
             ============================\n\
             a<b>        1000 10.0\n\
             longer_name 1001 -\n"
        );
        let no_hdr = Style { header: false, ..st(Format::Default) };
        assert_eq!(sample().render(no_hdr), "a<b>        1000 10.0\nlonger_name 1001 -\n");
    }

    #[test]
    fn delim_table_keeps_rule() {
        assert_eq!(
            sample().render(Style { delim: '|', ..st(Format::Delim) }),
            "Name|ID|cap (2^30B)\n===================\na<b>|1000|10.0\nlonger_name|1001|-\n"
        );
        // A row wider than the header widens the rule.
        let mut r = Report::new("X", &["ID"]);
        r.push(vec!["IBM.2107-75FA120/1000".into()]);
        assert_eq!(r.render(st(Format::Delim)), "ID\n=====================\nIBM.2107-75FA120/1000\n");
    }

    #[test]
    fn stanza_blocks() {
        assert_eq!(
            sample().render(st(Format::Stanza)),
            "Name        a<b>\nID          1000\ncap (2^30B) 10.0\n\nName        longer_name\nID          1001\ncap (2^30B) -\n"
        );
    }

    #[test]
    fn xml_document() {
        let mut r = Report::new("FBVolume", &["Name", "ID"]);
        r.push(vec!["a<\"&'>".into(), "1000".into()]);
        assert_eq!(
            r.render(st(Format::Xml)),
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<IRETURNVALUE>\n<INSTANCE CLASSNAME=\"FBVolume\">\n\
             <PROPERTY NAME=\"Name\" TYPE=\"string\"><VALUE>a&lt;&quot;&amp;&apos;&gt;</VALUE></PROPERTY>\n\
             <PROPERTY NAME=\"ID\" TYPE=\"string\"><VALUE>1000</VALUE></PROPERTY>\n</INSTANCE>\n</IRETURNVALUE>\n"
        );
    }

    #[test]
    fn json_array() {
        assert_eq!(
            sample().render(st(Format::Json)),
            "[{\"Name\":\"a<b>\",\"ID\":\"1000\",\"cap (2^30B)\":\"10.0\"},\n {\"Name\":\"longer_name\",\"ID\":\"1001\",\"cap (2^30B)\":\"-\"}]\n"
        );
        assert_eq!(Report::new("X", &["ID"]).render(st(Format::Json)), "[]\n");
    }

    #[test]
    fn short_keeps_id() {
        let r = sample().short("ID");
        assert_eq!(r.render(Style { header: false, ..st(Format::Default) }), "1000\n1001\n");
        assert_eq!(dash(""), "-");
    }
}
