//! A flashd process on a temp home, driven through the typed control client.

use flashtrack::control::{Capacity, Client, ItemOutcome, Reply, Request, Response, VolumeSpec};
use flashtrack::geometry::CapType;
use flashtrack::id::{ImageId, PoolId, VolumeId};
use flashtrack::image::record::Sam;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub fn flashd_bin() -> &'static str {
    env!("CARGO_BIN_EXE_flashd")
}

pub struct Daemon {
    pub home: PathBuf,
    child: Option<Child>,
}

impl Daemon {
    /// Run `dscli ARGS` against this daemon (no profile).
    pub fn dscli(&self, args: &[&str]) -> std::process::Output {
        Command::new(env!("CARGO_BIN_EXE_dscli"))
            .args(args)
            .env("FLASHTRACK_HOME", &self.home)
            .env("HOME", &self.home)
            .env_remove("FLASHTRACK_DSCLI_PROFILE")
            .output()
            .unwrap()
    }

    /// [`Daemon::dscli`]; it must succeed. Returns stdout.
    pub fn dscli_ok(&self, args: &[&str]) -> String {
        let out = self.dscli(args);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "dscli {args:?}: {text}{}", String::from_utf8_lossy(&out.stderr));
        text
    }

    /// Start `flashd run` on `home` and wait until its control socket answers.
    pub fn start(home: &Path) -> Daemon {
        Daemon::start_env(home, &[])
    }

    /// Like `start`, with extra environment for flashd (failpoints, boot ID).
    pub fn start_env(home: &Path, env: &[(&str, &str)]) -> Daemon {
        Daemon::start_with(home, &[], env)
    }

    /// Like `start_env`, with extra `flashd run` options (e.g. `--mount DIR`).
    pub fn start_with(home: &Path, args: &[&std::ffi::OsStr], env: &[(&str, &str)]) -> Daemon {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(home.join("test-stderr.log")).unwrap();
        let child = Command::new(flashd_bin())
            .args(["run", "--home"])
            .arg(home)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .envs(env.iter().copied())
            .spawn()
            .expect("spawn flashd");
        let mut d = Daemon { home: home.to_path_buf(), child: Some(child) };
        // Generous: on a loaded 2-CPU machine a restart after kill -9 (recovery, checkpoints,
        // fsyncs) has been seen to take over 20 s; a slow start is not what these tests check.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            // A failpoint may stop it during start (recovery writes a checkpoint): the
            // caller sees that through `wait_exit`.
            if !env.is_empty() && d.child.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(Some(_)))) {
                return d;
            }
            if let Ok(mut c) = Client::connect(&home.join("control.sock"))
                && matches!(c.call(Request::Hello), Ok(Response::Ok(_)))
            {
                return d;
            }
            assert!(Instant::now() < deadline, "flashd did not come up; see {}", home.join("flashd.log").display());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn client(&self) -> Client {
        Client::connect(&self.home.join("control.sock")).expect("connect control.sock")
    }

    pub fn ok(&self, req: Request) -> Reply {
        match self.client().call(req).expect("control call") {
            Response::Ok(r) => r,
            Response::Err(e) => panic!("flashd refused: {e}"),
        }
    }

    pub fn nbd_sock(&self) -> PathBuf {
        self.home.join("nbd.sock")
    }

    /// Wait for flashd to exit by itself (an aborting failpoint); true if it did in time.
    pub fn wait_exit(mut self, timeout: Duration) -> bool {
        let Some(mut c) = self.child.take() else { return true };
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = c.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = c.kill();
        let _ = c.wait();
        false
    }

    /// kill -9, as a crash.
    pub fn kill9(mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait for a clean exit; returns the exit status code.
    pub fn stop(mut self) -> Option<i32> {
        let mut c = self.child.take()?;
        let pid = rustix::process::Pid::from_raw(c.id() as i32).unwrap();
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(st)) = c.try_wait() {
                return st.code();
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                let _ = c.wait();
                panic!("flashd did not stop on SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub fn fb_request(image: &ImageId, pool: u16, cap: u64, captype: CapType, sam: Sam, vols: &[u16]) -> Request {
    let spec = VolumeSpec { pool: PoolId(pool), capacity: Capacity::Fb { cap, captype }, sam };
    Request::VolumeCreate {
        image: image.clone(),
        spec,
        volumes: vols.iter().map(|v| (VolumeId(*v), String::new())).collect(),
    }
}

pub fn all_ok(reply: Reply) {
    let Reply::Items(items) = reply else { panic!("expected items, got {reply:?}") };
    for ItemOutcome { object, result } in items {
        assert!(result.is_ok(), "{object}: {result:?}");
    }
}

/// Is `tool` on PATH? Prints why a test skips when not.
pub fn have(tool: &str, test: &str) -> bool {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        eprintln!("SKIP {test}: `{tool}` is not installed (scripts/install-deps.sh installs it as root)");
    }
    found
}

pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// `flashd ARGS --home HOME` (a one-shot subcommand: `key`, `peer`, `image`); its stdout.
pub fn flashd(home: &Path, args: &[&str]) -> String {
    let out = Command::new(flashd_bin()).args(args).arg("--home").arg(home).output().expect("run flashd");
    assert!(out.status.success(), "flashd {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// A loopback port nobody listens on right now.
pub fn free_port() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

/// A flashd listening for links on `addr` (`--link-listen`), with one image `id`.
pub fn remote_site(home: &Path, addr: &str, id: &ImageId) -> Daemon {
    let d = Daemon::start_with(home, &[std::ffi::OsStr::new("--link-listen"), std::ffi::OsStr::new(addr)], &[]);
    d.ok(Request::ImageCreate { id: id.clone() });
    d
}
