//! Golden DS CLI transcripts: for each `testdata/golden/NAME.cli`, a fresh flashd home with
//! the images the header asks for, then dscli in each mode the header lists, stdout compared
//! byte for byte with the expected file and the exit code with `NAME.rc` (script mode).
//!
//! Header lines (comments to dscli):
//! * `# images: IBM.2107-75FA120 IBM.1750-68FA120` — `flashd image create` each;
//! * `# modes: script stdin single` — which modes to run (default `script`); expected output
//!   in `NAME.out`, `NAME.stdin.out`, `NAME.single.out` (single = one process per line);
//! * `# clock: 1531339470` — `FLASHTRACK_CLOCK` (default 1531339470), `TZ=GMT` always;
//! * `# stdin: NAME.in` — script mode reads this file (in testdata/golden) as standard input:
//!   IDs for `-`, answers to `[y/n]` prompts (default: no input).
//!
//! In expected files `{home}` stands for the temporary site home and `{*}` matches any text
//! within a line (free space of the machine). `UPDATE_GOLDEN=1` rewrites the expected files,
//! keeping the lines whose wildcards still match.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const DEFAULT_CLOCK: &str = "1531339470";

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/golden")
}

fn flashd_bin() -> PathBuf {
    std::env::var_os("FLASHTRACK_FLASHD").map(PathBuf::from).unwrap_or_else(|| env!("CARGO_BIN_EXE_flashd").into())
}

/// A flashd on a temporary home, stopped on drop.
struct Site {
    home: tempfile::TempDir,
    child: Child,
}

impl Site {
    fn start(images: &[String]) -> Site {
        let home = tempfile::tempdir().expect("tempdir");
        for img in images {
            let st = Command::new(flashd_bin())
                .args(["image", "create", "--home"])
                .arg(home.path())
                .arg(img)
                .status()
                .expect("run flashd image create");
            assert!(st.success(), "flashd image create {img} failed");
        }
        let log = std::fs::File::create(home.path().join("flashd.test.log")).expect("log");
        let child = Command::new(flashd_bin())
            .args(["run", "--home"])
            .arg(home.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start flashd");
        let sock = home.path().join("control.sock");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::os::unix::net::UnixStream::connect(&sock).is_err() {
            assert!(Instant::now() < deadline, "flashd did not open {}", sock.display());
            std::thread::sleep(Duration::from_millis(20));
        }
        Site { home, child }
    }

    fn dscli(&self, clock: &str) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_dscli"));
        c.current_dir(dir())
            .env("FLASHTRACK_HOME", self.home.path())
            .env("HOME", self.home.path())
            .env("FLASHTRACK_CLOCK", clock)
            .env("TZ", "GMT")
            .env_remove("FLASHTRACK_DSCLI_PROFILE")
            .env_remove("XDG_DATA_HOME");
        c
    }

    /// Output with the home path replaced by `{home}`.
    fn clean(&self, bytes: &[u8]) -> String {
        let home = self.home.path().to_string_lossy().into_owned();
        String::from_utf8_lossy(bytes).replace(&home, "{home}")
    }
}

impl Drop for Site {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `expected` line may hold `{*}` wildcards.
fn line_matches(expected: &str, actual: &str) -> bool {
    if !expected.contains("{*}") {
        return expected == actual;
    }
    let parts: Vec<&str> = expected.split("{*}").collect();
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !actual.starts_with(first) || !actual[first.len()..].ends_with(last) {
        return false;
    }
    let mut rest = &actual[first.len()..actual.len() - last.len()];
    for p in &parts[1..parts.len() - 1] {
        match rest.find(p) {
            Some(i) => rest = &rest[i + p.len()..],
            None => return false,
        }
    }
    true
}

fn matches(expected: &str, actual: &str) -> bool {
    let e: Vec<&str> = expected.split('\n').collect();
    let a: Vec<&str> = actual.split('\n').collect();
    e.len() == a.len() && e.iter().zip(&a).all(|(e, a)| line_matches(e, a))
}

/// What UPDATE_GOLDEN writes: actual lines, except where an old wildcard line still matches.
fn merged(expected: &str, actual: &str) -> String {
    let e: Vec<&str> = expected.split('\n').collect();
    actual
        .split('\n')
        .enumerate()
        .map(|(i, a)| match e.get(i) {
            Some(x) if x.contains("{*}") && line_matches(x, a) => x.to_string(),
            _ => a.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn check(path: &Path, actual: &str, failures: &mut Vec<String>) {
    let expected = std::fs::read_to_string(path).unwrap_or_default();
    if matches(&expected, actual) {
        return;
    }
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(path, merged(&expected, actual)).expect("write golden");
        return;
    }
    failures.push(format!("{} differs:\n--- expected\n{expected}\n--- actual\n{actual}", path.display()));
}

/// dscli writes nothing to stderr, ever (automation treats stderr as failure; errors go to
/// stdout with their message ID and the exit code says it).
fn no_stderr(cli: &Path, o: &std::process::Output, failures: &mut Vec<String>) {
    if !o.stderr.is_empty() {
        failures.push(format!("{}: dscli wrote to stderr: {}", cli.display(), String::from_utf8_lossy(&o.stderr)));
    }
}

fn header(script: &str, key: &str) -> Option<Vec<String>> {
    script
        .lines()
        .filter_map(|l| l.strip_prefix('#'))
        .filter_map(|l| l.trim().strip_prefix(key))
        .map(|v| v.split_whitespace().map(String::from).collect())
        .next()
}

fn run_case(cli: &Path, failures: &mut Vec<String>) {
    let script = std::fs::read_to_string(cli).expect("read script");
    let images = header(&script, "images:").unwrap_or_default();
    let modes = header(&script, "modes:").unwrap_or_else(|| vec!["script".into()]);
    let clock = header(&script, "clock:").and_then(|c| c.first().cloned()).unwrap_or_else(|| DEFAULT_CLOCK.into());
    let base = cli.with_extension("");
    for mode in &modes {
        let site = Site::start(&images);
        let (out, code) = match mode.as_str() {
            "script" => {
                let mut c = site.dscli(&clock);
                c.arg("-script").arg(cli);
                if let Some(f) = header(&script, "stdin:").and_then(|f| f.first().cloned()) {
                    c.stdin(std::fs::File::open(dir().join(f)).expect("open stdin file"));
                }
                let o = c.output().expect("run dscli");
                no_stderr(cli, &o, failures);
                (site.clean(&o.stdout), o.status.code())
            }
            "stdin" => {
                let mut c = site.dscli(&clock);
                c.stdin(std::fs::File::open(cli).expect("open script"));
                let o = c.output().expect("run dscli");
                no_stderr(cli, &o, failures);
                (site.clean(&o.stdout), o.status.code())
            }
            "single" => {
                let mut all = String::new();
                let mut last = Some(0);
                for line in script.lines() {
                    let words = flashtrack_cli::dscli::tokenizer::split(line).expect("script line");
                    if words.is_empty() {
                        continue;
                    }
                    let o = site.dscli(&clock).args(&words).stdin(Stdio::null()).output().expect("run dscli");
                    no_stderr(cli, &o, failures);
                    all.push_str(&site.clean(&o.stdout));
                    if o.status.code() != Some(0) {
                        last = o.status.code();
                    }
                }
                (all, last)
            }
            other => panic!("{}: unknown mode {other}", cli.display()),
        };
        let suffix = if mode == "script" { String::new() } else { format!(".{mode}") };
        check(&PathBuf::from(format!("{}{suffix}.out", base.display())), &out, failures);
        let rc_path = PathBuf::from(format!("{}{suffix}.rc", base.display()));
        let rc = format!("{}\n", code.map(|c| c.to_string()).unwrap_or_else(|| "signal".into()));
        if rc_path.exists() || std::env::var_os("UPDATE_GOLDEN").is_some() {
            check(&rc_path, &rc, failures);
        }
    }
}

#[test]
fn golden_transcripts() {
    let mut cases: Vec<PathBuf> = std::fs::read_dir(dir())
        .expect("testdata/golden")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "cli"))
        .collect();
    cases.sort();
    assert!(!cases.is_empty(), "no golden scripts");
    let mut failures = Vec::new();
    for c in &cases {
        run_case(c, &mut failures);
    }
    assert!(failures.is_empty(), "{} golden mismatch(es):\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn wildcards() {
    assert!(line_matches("P0   P0 fb 0 below {*} 3", "P0   P0 fb 0 below 12  40 12 0 3"));
    assert!(!line_matches("a{*}c", "abd"));
    assert!(line_matches("a{*}b{*}c", "axxbyyc"));
    assert_eq!(merged("x\nP {*}\n", "y\nP 12\n"), "y\nP {*}\n");
}
