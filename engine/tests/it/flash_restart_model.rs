//! The FlashCopy model again, through the whole site and with restarts: random host writes,
//! establishes, resyncs, withdraws, copies, checkpoints, crashes (the site dropped without
//! closing, as kill -9 leaves it) and clean restarts. After every step every volume must read
//! as the model says (invariant 1 across recovery), and after a crash every relationship must
//! come back, Valid (a process crash loses nothing). Increments are not counted here: a crash
//! may legitimately mark more than was written since the last increment (the journal keeps
//! marks until a checkpoint covers them). `FLASHTRACK_RESTART_CASES` sets the budget.

use crate::fixture::site_ok;
use flashtrack::control::{Capacity, Reply, Request, Response, VolumeSpec, Withdraw};
use flashtrack::flash::relationship::{FlashOptions, FlashState};
use flashtrack::geometry::CapType;
use flashtrack::id::{ImageId, PoolId, VolumeId, VolumeKey};
use flashtrack::image::record::Sam;
use flashtrack::site::Site;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

const VOLS: usize = 4;
const BLOCKS: u64 = 3 * 128 + 50;
const SIZE: usize = (BLOCKS * 512) as usize;

#[derive(Debug, Clone)]
enum Op {
    Write { vol: usize, block: u64, blocks: u64, seed: u8 },
    Establish { src: usize, tgt: usize, record: bool, nocopy: bool },
    Withdraw { pick: usize },
    Resync { pick: usize },
    CopyAll,
    Checkpoint,
    Crash,
    CleanRestart,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (0..VOLS, 0..BLOCKS, 1u64..=200, any::<u8>()).prop_map(|(vol, block, blocks, seed)| Op::Write { vol, block, blocks: blocks.min(BLOCKS - block), seed }),
        3 => (0..VOLS, 0..VOLS, any::<bool>(), any::<bool>()).prop_map(|(src, tgt, record, nocopy)| Op::Establish { src, tgt, record, nocopy }),
        1 => any::<usize>().prop_map(|pick| Op::Withdraw { pick }),
        3 => any::<usize>().prop_map(|pick| Op::Resync { pick }),
        1 => Just(Op::CopyAll),
        1 => Just(Op::Checkpoint),
        2 => Just(Op::Crash),
        1 => Just(Op::CleanRestart),
    ]
}

struct World {
    dir: tempfile::TempDir,
    site: Option<Site>,
    img: ImageId,
    data: Vec<Vec<u8>>,
    /// (source, target, records)
    rels: Vec<(usize, usize, bool)>,
}

fn vid(v: usize) -> VolumeId {
    VolumeId(0x1000 + v as u16)
}

impl World {
    fn new() -> World {
        let dir = tempfile::tempdir().expect("tempdir");
        let site = Site::open(dir.path(), crate::fixture::io()).expect("site");
        let img: ImageId = "IBM.2107-75FA120".parse().expect("id");
        site_ok(&site, Request::ImageCreate { id: img.clone() });
        let spec = VolumeSpec {
            pool: PoolId(0),
            capacity: Capacity::Fb { cap: BLOCKS, captype: CapType::Blocks },
            sam: Sam::Ese,
        };
        let volumes = (0..VOLS).map(|v| (vid(v), String::new())).collect();
        site_ok(&site, Request::VolumeCreate { image: img.clone(), spec, volumes });
        World { dir, site: Some(site), img, data: vec![vec![0; SIZE]; VOLS], rels: Vec::new() }
    }

    fn site(&self) -> &Site {
        self.site.as_ref().expect("open site")
    }

    fn host(&self, v: usize) -> (flashtrack::volume::SessionGuard, std::sync::Arc<flashtrack::flash::ImageFlash>) {
        self.site().open_host(&VolumeKey { image: self.img.clone(), volume: vid(v) }).expect("volume")
    }

    fn ok(&self, req: Request) -> Result<(), TestCaseError> {
        match self.site().handle(req) {
            Response::Ok(Reply::Items(items)) => match items.into_iter().find(|i| i.result.is_err()) {
                Some(i) => Err(TestCaseError::fail(format!("{}: {:?}", i.object, i.result))),
                None => Ok(()),
            },
            Response::Ok(_) => Ok(()),
            Response::Err(e) => Err(TestCaseError::fail(e.to_string())),
        }
    }

    fn step(&mut self, op: &Op) -> Result<(), TestCaseError> {
        match *op {
            Op::Write { vol, block, blocks, seed } => {
                let off = block * 512;
                let bytes: Vec<u8> = (0..blocks * 512).map(|i| seed.wrapping_add((i / 512) as u8) | 1).collect();
                let (v, f) = self.host(vol);
                f.write(&v, off, &bytes, false).map_err(|e| TestCaseError::fail(e.to_string()))?;
                self.data[vol][off as usize..off as usize + bytes.len()].copy_from_slice(&bytes);
            }
            Op::Establish { src, tgt, record, nocopy } => {
                let is_tgt = |v| self.rels.iter().any(|r| r.1 == v);
                let is_src = |v| self.rels.iter().any(|r| r.0 == v);
                if src == tgt
                    || is_tgt(tgt)
                    || is_tgt(src)
                    || is_src(tgt)
                    || (record && self.rels.iter().any(|r| r.0 == src && r.2))
                {
                    return Ok(());
                }
                // Persistent, so a COPY relationship does not end by itself when copied.
                let options = FlashOptions { record, persist: true, nocopy, ..FlashOptions::default() };
                self.ok(Request::FlashCreate { image: self.img.clone(), pairs: vec![(vid(src), vid(tgt))], options })?;
                self.data[tgt] = self.data[src].clone();
                self.rels.push((src, tgt, record));
            }
            Op::Withdraw { pick } => {
                if self.rels.is_empty() {
                    return Ok(());
                }
                let (s, t, _) = self.rels.remove(pick % self.rels.len());
                // Uncopied target tracks are undefined after a withdraw: copy first so the
                // model knows the content (a withdraw of a copied pair keeps T0).
                let f = self.site().flash_of(&self.img).expect("flash");
                if let Some(r) = f.relationships().into_iter().find(|r| r.ids() == (vid(s), vid(t))) {
                    f.copy_all(&r).map_err(|e| TestCaseError::fail(e.to_string()))?;
                }
                self.ok(Request::FlashRemove {
                    image: self.img.clone(),
                    pairs: vec![(vid(s), vid(t))],
                    withdraw: Withdraw::default(),
                })?;
            }
            Op::Resync { pick } => {
                let recording: Vec<_> = self.rels.iter().filter(|r| r.2).cloned().collect();
                if recording.is_empty() {
                    return Ok(());
                }
                let (s, t, _) = recording[pick % recording.len()];
                let options = FlashOptions { record: true, persist: true, ..FlashOptions::default() };
                self.ok(Request::FlashResync {
                    image: self.img.clone(),
                    pairs: vec![(vid(s), vid(t))],
                    options,
                    seqnum: None,
                })?;
                self.data[t] = self.data[s].clone();
            }
            Op::CopyAll => {
                let f = self.site().flash_of(&self.img).expect("flash");
                for r in f.relationships() {
                    f.copy_all(&r).map_err(|e| TestCaseError::fail(e.to_string()))?;
                }
            }
            Op::Checkpoint => self.site().checkpoint(),
            Op::Crash => {
                self.site = None; // nothing closed: what kill -9 leaves
                self.site = Some(
                    Site::open(self.dir.path(), crate::fixture::io())
                        .map_err(|e| TestCaseError::fail(e.to_string()))?,
                );
                self.check_relationships()?;
            }
            Op::CleanRestart => {
                self.site().flush_all();
                self.site = None;
                self.site = Some(
                    Site::open(self.dir.path(), crate::fixture::io())
                        .map_err(|e| TestCaseError::fail(e.to_string()))?,
                );
                self.check_relationships()?;
            }
        }
        self.check_data()
    }

    fn check_relationships(&self) -> Result<(), TestCaseError> {
        let Reply::Flash(views) = site_ok(self.site(), Request::FlashList { image: self.img.clone() }) else {
            return Err(TestCaseError::fail("no flash list"));
        };
        let mut got: Vec<_> = views.iter().map(|v| (v.record.source, v.record.target)).collect();
        let mut want: Vec<_> = self.rels.iter().map(|r| (vid(r.0), vid(r.1))).collect();
        got.sort();
        want.sort();
        prop_assert_eq!(got, want, "relationships after a restart");
        for v in &views {
            prop_assert_eq!(v.record.state, FlashState::Valid, "a process crash must not invalidate a pair");
        }
        Ok(())
    }

    fn check_data(&self) -> Result<(), TestCaseError> {
        for v in 0..VOLS {
            let (vol, f) = self.host(v);
            let mut got = vec![0u8; SIZE];
            f.read(&vol, 0, &mut got).map_err(|e| TestCaseError::fail(e.to_string()))?;
            if got != self.data[v] {
                let at = got.iter().zip(&self.data[v]).position(|(a, b)| a != b).unwrap_or(0);
                return Err(TestCaseError::fail(format!(
                    "volume {v} differs from the model at byte {at} (track {})",
                    at / 65536
                )));
            }
        }
        Ok(())
    }
}

#[test]
fn flashcopy_survives_crashes_and_restarts_as_the_model_says() {
    let cases = std::env::var("FLASHTRACK_RESTART_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(48);
    println!("restart model: {cases} cases of up to 32 steps (FLASHTRACK_RESTART_CASES to change)");
    let mut runner = TestRunner::new(Config { cases, ..Config::default() });
    let result = runner.run(&proptest::collection::vec(op(), 1..32), |ops| {
        let mut w = World::new();
        for op in &ops {
            w.step(op)?;
        }
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}
