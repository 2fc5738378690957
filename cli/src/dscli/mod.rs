//! `dscli`: the DS CLI-compatible client of flashd.
//!
//! Layers, as in ripgrep: words ([`tokenizer`]) -> checked invocation ([`verb`], [`ids`]) ->
//! settings ([`profile`], [`settings`]) -> requests ([`client`], [`commands`]) -> text
//! ([`report`], [`banner`], [`messages`]). Modes and exit codes: see [`session`].
//!
//! stdout/stderr policy: every message, errors included, goes to stdout (as IBM's dscli
//! does), and the exit code says whether the command failed (0 ok, 2 syntax, 3 connection,
//! 4 server rejection, 5 authentication, 6 application). dscli never writes to stderr when
//! stderr is not a terminal, so automation that treats stderr as failure sees only what the
//! exit code says; on a terminal the one exception is the `-wait` progress bar.

pub mod banner;
pub mod client;
pub mod commands;
pub mod ids;
pub mod messages;
pub mod profile;
pub mod report;
pub mod session;
pub mod settings;
pub mod tokenizer;
pub mod verb;
mod verbs_copy;
mod verbs_storage;

use client::Target;
use messages::exit;
use session::{Input, Mode, Out, Session, Stop};
use settings::{Format, Layer, Settings};
use std::io::IsTerminal;
use std::path::PathBuf;

/// Options before the verb.
#[derive(Debug, Default)]
struct Globals {
    cfg: Option<PathBuf>,
    hmc1: Option<String>,
    script: Option<PathBuf>,
    layer: Layer,
    help: bool,
}

/// Options given to the dscli program itself. Output flags here apply to the whole
/// invocation; `-user`, `-passwd`, `-pwfile`, `-hmc2` are accepted and not enforced.
const GLOBAL_VALUED: &[&str] = &[
    "-cfg", "-hmc1", "-hmc2", "-user", "-passwd", "-pwfile", "-script", "-fmt", "-delim", "-hdr", "-bnr", "-v", "-p",
    "-r",
];

fn parse_globals(args: &[String]) -> Result<(Globals, Vec<String>), String> {
    let mut g = Globals::default();
    let mut i = 0;
    while i < args.len() && args[i].starts_with('-') && args[i].len() > 1 {
        let a = args[i].as_str();
        i += 1;
        match a {
            "-help" | "-h" | "-?" => g.help = true,
            "-fullid" => g.layer.fullid = Some(true),
            _ if GLOBAL_VALUED.contains(&a) => {
                let Some(v) = args.get(i) else {
                    return Err(messages::FLAG_NO_VALUE.line("dscli", &[a]));
                };
                i += 1;
                let bad_enum = |allowed: &str| messages::BAD_ENUM.line("dscli", &[a, v, allowed]);
                let onoff = || settings::on_off(v).ok_or_else(|| bad_enum("on|off"));
                match a {
                    "-cfg" => g.cfg = Some(PathBuf::from(v)),
                    "-hmc1" => g.hmc1 = Some(v.clone()),
                    "-script" => g.script = Some(PathBuf::from(v)),
                    "-fmt" => {
                        g.layer.format = Some(Format::parse(v).ok_or_else(|| bad_enum(&verb::FORMATS.join("|")))?)
                    }
                    "-delim" => {
                        let mut c = v.chars();
                        match (c.next(), c.next()) {
                            (Some(d), None) => g.layer.delim = Some(d),
                            _ => {
                                return Err(messages::BAD_VALUE.line("dscli", &[a, v, "one character expected"]));
                            }
                        }
                    }
                    "-hdr" => g.layer.header = Some(onoff()?),
                    "-bnr" => g.layer.banner = Some(onoff()?),
                    "-v" => g.layer.verbose = Some(onoff()?),
                    "-p" => g.layer.paging = Some(onoff()?),
                    "-r" => match v.parse::<u8>() {
                        Ok(r @ 1..=100) => g.layer.rows = Some(r),
                        _ => {
                            return Err(messages::BAD_VALUE.line("dscli", &[a, v, "1-100 expected"]));
                        }
                    },
                    _ => {} // -hmc2, -user, -passwd, -pwfile: accepted, not enforced.
                }
            }
            _ => return Err(messages::BAD_GLOBAL.line("dscli", &[a])),
        }
    }
    Ok((g, args[i..].to_vec()))
}

/// General help (`dscli -help`, `help`).
pub fn general_help() -> String {
    let mut s = String::from(
        "dscli [-cfg profile] [-hmc1 unix:PATH] [-user name] [-passwd pw | -pwfile file]\n      \
         [-fmt default|delim|stanza|xml|json] [-delim char] [-hdr on|off] [-bnr on|off] [-v on|off]\n      \
         [-script file | command [flags] [IDs]]\n\n\
         -user, -passwd and -pwfile are accepted but not enforced (flashd trusts its socket's\n\
         file permissions). -hmc1 unix:PATH names a flashd control socket; without it dscli\n\
         uses the site home and starts flashd there if needed. -fmt json is an extension.\n\
         Exit codes: 0 ok, 2 syntax, 3 connection, 4 server, 5 authentication, 6 application;\n\
         a command acting on several objects tries each and exits with the code of the last\n\
         failed one. Messages, errors included, are printed on stdout.\n\nCommands:\n",
    );
    let w = verb::verbs().map(|v| v.name.len()).max().unwrap_or(0);
    for v in verb::verbs() {
        s.push_str(&format!("  {:<w$}  {}\n", v.name, v.summary));
    }
    s
}

/// The whole program; returns the process exit code.
pub fn main() -> u8 {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let stdout = std::io::stdout();
    let mut out = Out::new(Box::new(std::io::BufWriter::new(stdout.lock())));
    let code = run(&args, &mut out);
    let _ = out.flush();
    code
}

fn run(args: &[String], out: &mut Out) -> u8 {
    let say = |out: &mut Out, line: &str, code: u8| -> u8 {
        match out.line(line) {
            Ok(()) => code,
            Err(_) => exit::OK,
        }
    };
    let (g, words) = match parse_globals(args) {
        Ok(x) => x,
        Err(line) => return say(out, &line, exit::SYNTAX),
    };
    if g.help {
        return match out.text(&general_help()) {
            Ok(()) | Err(_) => exit::OK,
        };
    }
    if g.script.is_some() && !words.is_empty() {
        return say(out, &messages::BAD_GLOBAL.line("dscli", &[&words[0]]), exit::SYNTAX);
    }
    // Profile: -cfg must be readable; the default one only if present.
    let mut settings = Settings { global: g.layer.clone(), ..Settings::default() };
    let mut hmc1 = g.hmc1.clone();
    let explicit = g.cfg.is_some();
    if let Some(path) = g.cfg.clone().or_else(profile::default_path) {
        let shown = path.display().to_string();
        match std::fs::read_to_string(&path) {
            Ok(text) => match profile::parse(&text) {
                Ok(p) => {
                    settings.profile = p.layer;
                    hmc1 = hmc1.or(p.hmc1);
                }
                Err(e) => {
                    let line = messages::PROFILE.line("dscli", &[&shown, &e.line.to_string(), &e.reason]);
                    return say(out, &line, exit::APPLICATION);
                }
            },
            Err(e) if explicit || e.kind() != std::io::ErrorKind::NotFound => {
                return say(out, &messages::UNREADABLE.line("dscli", &[&shown, &e.to_string()]), exit::APPLICATION);
            }
            Err(_) => {}
        }
    }
    let target = match &hmc1 {
        Some(h) => Target::from_hmc(h),
        None => Ok(Target::home()),
    };
    let stdin_tty = std::io::stdin().is_terminal();
    let mode = if !words.is_empty() {
        Mode::Single
    } else if g.script.is_some() {
        Mode::Script
    } else if stdin_tty {
        Mode::Interactive
    } else {
        Mode::Stdin
    };
    let script = match (&g.script, mode) {
        (Some(p), Mode::Script) => match std::fs::read_to_string(p) {
            Ok(t) => Some(t),
            Err(e) => {
                let line = messages::UNREADABLE.line("dscli", &[&p.display().to_string(), &e.to_string()]);
                return say(out, &line, exit::APPLICATION);
            }
        },
        _ => None,
    };
    let input = Input::new(Box::new(std::io::BufReader::new(std::io::stdin())), stdin_tty);
    let input = if mode == Mode::Interactive { input.with_line_editing() } else { input };
    // The session owns stdout from here; hand it over.
    let taken = std::mem::replace(out, Out::new(Box::new(std::io::sink())));
    let mut session = Session::new(taken, input, mode, settings, target);
    let result = match mode {
        Mode::Single => session.run_words(&words),
        Mode::Script => session.run_script(script.as_deref().unwrap_or("")),
        Mode::Stdin | Mode::Interactive => session.run_prompt(),
    };
    let _ = session.out.flush();
    match result {
        Ok(code) | Err(Stop::Code(code)) => code,
        Err(Stop::Pipe) => exit::OK,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn globals_then_verb() {
        let (g, rest) =
            parse_globals(&a("-cfg p.profile -fmt delim -delim | -bnr off -user u -passwd x lsfbvol -l")).unwrap();
        assert_eq!(g.cfg, Some(PathBuf::from("p.profile")));
        assert_eq!(g.layer.format, Some(Format::Delim));
        assert_eq!(g.layer.delim, Some('|'));
        assert_eq!(g.layer.banner, Some(false));
        assert_eq!(rest, a("lsfbvol -l"));
    }

    #[test]
    fn global_errors() {
        assert!(parse_globals(&a("-bogus lsfbvol")).unwrap_err().starts_with("CMUC90017E dscli:"));
        assert!(parse_globals(&a("-fmt")).unwrap_err().starts_with("CMUC90003E"));
        assert!(parse_globals(&a("-hdr maybe ver")).unwrap_err().starts_with("CMUC90004E"));
        assert!(parse_globals(&a("-script")).is_err());
    }

    #[test]
    fn help_lists_every_verb() {
        let h = general_help();
        for v in verb::verbs() {
            assert!(h.contains(v.name));
        }
    }
}
