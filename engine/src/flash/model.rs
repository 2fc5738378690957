//! The FlashCopy model test: random host writes, trims, establishes (each option that
//! changes the data path), resyncs (some with a failing persist), withdraws and copier steps
//! against an in-memory model, checking after every step:
//! * invariant 1: every volume reads as the model says (targets keep T0 except where written);
//! * the target bitmap is exactly the model's (what is still borrowed from the source);
//! * invariant 2: a resync's increment is exactly the uncopied tracks plus those written on
//!   either side since the last increment (counted), and after the copy target == source.
//!
//! Budget: `FLASHTRACK_MODEL_CASES` cases (default 256) of up to 64 steps; proptest keeps
//! failing seeds in `engine/proptest-regressions/` (committed). `known_bad_variants_are_caught`
//! runs the same model against each mutant and fails if any survives.

use super::ImageFlash;
use super::grain;
use super::mutant::{self, Mutant};
use super::relationship::{FlashOptions, FlashRecord, FlashState, Relationship};
use crate::bitmap::TrackBitmap;
use crate::geometry::{Geometry, TRACK_BYTES, TrackNo};
use crate::id::{VolumeId, VolumeKey};
use crate::io::SyncEngine;
use crate::volume::{Backing, Volume};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

const VOLS: usize = 4;
/// 3 full tracks and a partial fourth (50 blocks).
const BLOCKS: u64 = 3 * 128 + 50;
const SIZE: u64 = BLOCKS * 512;
const TRACKS: u32 = 4;

#[derive(Debug, Clone)]
enum Op {
    Write { vol: usize, off: u64, len: u64, seed: u8 },
    Trim { vol: usize, off: u64, len: u64 },
    Establish { src: usize, tgt: usize, record: bool, nocopy: bool },
    Withdraw { pick: usize },
    Resync { pick: usize, fail_persist: bool },
    CopyRun { pick: usize },
    CopyAll { pick: usize },
}

fn range() -> impl Strategy<Value = (u64, u64)> {
    // 512-byte aligned I/O as hosts send it, from one sector to two tracks.
    (0..BLOCKS, 1u64..=256).prop_map(|(b, n)| (b * 512, n.min(BLOCKS - b) * 512))
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..VOLS, range(), any::<u8>()).prop_map(|(vol, (off, len), seed)| Op::Write { vol, off, len, seed }),
        1 => (0..VOLS, range()).prop_map(|(vol, (off, len))| Op::Trim { vol, off, len }),
        3 => (0..VOLS, 0..VOLS, any::<bool>(), any::<bool>()).prop_map(|(src, tgt, record, nocopy)| Op::Establish { src, tgt, record, nocopy }),
        1 => any::<usize>().prop_map(|pick| Op::Withdraw { pick }),
        3 => (any::<usize>(), proptest::bool::weighted(0.2)).prop_map(|(pick, fail_persist)| Op::Resync { pick, fail_persist }),
        2 => any::<usize>().prop_map(|pick| Op::CopyRun { pick }),
        1 => any::<usize>().prop_map(|pick| Op::CopyAll { pick }),
    ]
}

struct ModelRel {
    src: usize,
    tgt: usize,
    record: bool,
    /// The model's target bitmap (1 = still borrowed from the source).
    bits: BTreeSet<u32>,
    /// Grains of borrowed tracks already preserved on the target (sub-track copy-on-write).
    grains: BTreeMap<u32, u16>,
    /// Tracks written on either side since the last increment.
    written: BTreeSet<u32>,
    engine: Arc<Relationship>,
}

struct World {
    _dir: tempfile::TempDir,
    vols: Vec<Arc<Volume>>,
    flash: ImageFlash,
    data: Vec<Vec<u8>>,
    rels: Vec<ModelRel>,
}

impl World {
    fn new() -> World {
        let dir = tempfile::tempdir().expect("tempdir");
        // The runtime's engine (io_uring here), shared by every case: `CopyAll` then runs on
        // the copier's io_uring stream, `CopyRun` on blocking calls, so the model checks both.
        static IO: std::sync::OnceLock<Arc<dyn crate::io::IoEngine>> = std::sync::OnceLock::new();
        let io = IO.get_or_init(|| crate::io::select().unwrap_or_else(|_| Arc::new(SyncEngine))).clone();
        let vols = (0..VOLS)
            .map(|i| {
                let b = Backing::create_file(dir.path().join(format!("v{i}")), SIZE, false).expect("backing");
                let key =
                    VolumeKey { image: "IBM.2107-75FA120".parse().expect("id"), volume: VolumeId(0x1000 + i as u16) };
                Arc::new(Volume::new(key, Geometry::Fb { blocks: BLOCKS }, b, io.clone()).expect("volume"))
            })
            .collect();
        World { _dir: dir, vols, flash: ImageFlash::new(), data: vec![vec![0; SIZE as usize]; VOLS], rels: Vec::new() }
    }

    fn pick(&self, pick: usize) -> Option<usize> {
        (!self.rels.is_empty()).then(|| pick % self.rels.len())
    }

    fn step(&mut self, op: &Op) -> Result<(), TestCaseError> {
        match *op {
            Op::Write { vol, off, len, seed } => {
                let bytes: Vec<u8> = (0..len).map(|i| seed.wrapping_add((i / 512) as u8) | 1).collect();
                let r = self.flash.write(&self.vols[vol], off, &bytes, false);
                let inhibited = self.rels.iter().any(|m| m.tgt == vol && m.engine.state().record.options.tgtinhibit);
                prop_assert_eq!(r.is_ok(), !inhibited, "write result {:?}", r);
                self.data[vol][off as usize..(off + len) as usize].copy_from_slice(&bytes);
                self.wrote(vol, off, len);
            }
            Op::Trim { vol, off, len } => {
                self.flash.trim(&self.vols[vol], off, len).map_err(|e| TestCaseError::fail(e.to_string()))?;
                self.data[vol][off as usize..(off + len) as usize].fill(0);
                self.wrote(vol, off, len);
            }
            Op::Establish { src, tgt, record, nocopy } => {
                // The image's rules (checked there): no self, one source per target, no cascading.
                let is_tgt = |v| self.rels.iter().any(|m| m.tgt == v);
                let is_src = |v| self.rels.iter().any(|m| m.src == v);
                if src == tgt
                    || is_tgt(tgt)
                    || is_tgt(src)
                    || is_src(tgt)
                    || (record && self.rels.iter().any(|m| m.src == src && m.record))
                {
                    return Ok(());
                }
                let options = FlashOptions { record, persist: true, nocopy, ..FlashOptions::default() };
                let record_ = FlashRecord {
                    source: self.vols[src].key().volume,
                    target: self.vols[tgt].key().volume,
                    options,
                    state: FlashState::Valid,
                    revertible: false,
                    created: 0,
                    synced: 0,
                    increment: 0,
                };
                let engine = self.flash.establish(self.vols[src].clone(), self.vols[tgt].clone(), record_);
                self.data[tgt] = self.data[src].clone();
                self.rels.push(ModelRel {
                    src,
                    tgt,
                    record,
                    bits: (0..TRACKS).collect(),
                    grains: BTreeMap::new(),
                    written: BTreeSet::new(),
                    engine,
                });
            }
            Op::Withdraw { pick } => {
                let Some(i) = self.pick(pick) else { return Ok(()) };
                let m = self.rels.remove(i);
                self.flash.remove(self.vols[m.src].handle(), self.vols[m.tgt].handle());
                // Uncopied target tracks are undefined after a withdraw: adopt what is there.
                let mut now = vec![0; SIZE as usize];
                self.vols[m.tgt].read(0, &mut now).map_err(|e| TestCaseError::fail(e.to_string()))?;
                for t in &m.bits {
                    let (a, b) = track_bytes(*t);
                    self.data[m.tgt][a..b].copy_from_slice(&now[a..b]);
                }
            }
            Op::Resync { pick, fail_persist } => {
                let Some(i) = self.pick(pick) else { return Ok(()) };
                if !self.rels[i].record {
                    return Ok(());
                }
                let m = &mut self.rels[i];
                let expected: BTreeSet<u32> = m.bits.union(&m.written).copied().collect();
                let options = m.engine.state().record.options.clone();
                let r = self.flash.resync(&m.engine, options, 1, false, |_next: &TrackBitmap| {
                    if fail_persist {
                        Err(crate::error::Error::new(crate::error::ErrorKind::Io, "model", "injected"))
                    } else {
                        Ok(())
                    }
                });
                if fail_persist {
                    prop_assert!(r.is_err());
                    return Ok(());
                }
                prop_assert_eq!(r.ok(), Some(expected.len() as u64), "increment size");
                m.bits = expected;
                m.grains.clear(); // a new point in time: nothing of the old one is kept
                m.written.clear();
                let (src, tgt) = (m.src, m.tgt);
                self.data[tgt] = self.data[src].clone();
            }
            Op::CopyRun { pick } => {
                let Some(i) = self.pick(pick) else { return Ok(()) };
                let m = &mut self.rels[i];
                self.flash.copy_next_run(&m.engine, 0).map_err(|e| TestCaseError::fail(e.to_string()))?;
                // From track 0: runs of adjacent uncopied tracks (at most RUN_TRACKS each),
                // until at least BATCH_TRACKS tracks are taken.
                let (mut tracks, mut at) = (0, 0u32);
                while tracks < super::copier::BATCH_TRACKS {
                    let Some(&first) = m.bits.range(at..).next() else { break };
                    let mut t = first;
                    while m.bits.remove(&t) {
                        t += 1;
                        if t - first == super::copier::RUN_TRACKS {
                            break;
                        }
                    }
                    tracks += t - first;
                    at = t;
                }
                m.grains.retain(|t, _| m.bits.contains(t));
            }
            Op::CopyAll { pick } => {
                let Some(i) = self.pick(pick) else { return Ok(()) };
                self.flash.copy_all(&self.rels[i].engine).map_err(|e| TestCaseError::fail(e.to_string()))?;
                self.rels[i].bits.clear();
                self.rels[i].grains.clear();
            }
        }
        self.check()
    }

    /// A host changed `vol`'s bytes: on a source, copy-on-write preserves the grains it
    /// overwrites (a track whose every grain is preserved is copied: its bit clears); on a
    /// target, the fill clears the bit; recording notes the tracks.
    fn wrote(&mut self, vol: usize, off: u64, len: u64) {
        let tracks = Geometry::tracks_of(off, len);
        for m in self.rels.iter_mut().filter(|m| m.src == vol || m.tgt == vol) {
            for t in tracks.clone() {
                if m.tgt == vol {
                    m.bits.remove(&t);
                    m.grains.remove(&t);
                } else if m.bits.contains(&t) {
                    let (a, b) = track_bytes(t);
                    let track_len = (b - a) as u64;
                    let g = m.grains.entry(t).or_insert(0);
                    *g |= grain::touched(TrackNo(t), off, len, track_len);
                    if *g == grain::full_mask(track_len) {
                        m.bits.remove(&t);
                        m.grains.remove(&t);
                    }
                }
                m.written.insert(t);
            }
        }
    }

    fn check(&self) -> Result<(), TestCaseError> {
        for (v, vol) in self.vols.iter().enumerate() {
            let mut got = vec![0; SIZE as usize];
            self.flash.read(vol, 0, &mut got).map_err(|e| TestCaseError::fail(e.to_string()))?;
            if got != self.data[v] {
                let at = got.iter().zip(&self.data[v]).position(|(a, b)| a != b).unwrap_or(0);
                return Err(TestCaseError::fail(format!(
                    "volume {v} differs from the model at byte {at} (track {})",
                    at as u64 / TRACK_BYTES
                )));
            }
        }
        for m in &self.rels {
            let engine: BTreeSet<u32> = m.engine.state().target_bits.iter().map(|TrackNo(t)| t).collect();
            prop_assert_eq!(&engine, &m.bits, "target bitmap of {}->{}", m.src, m.tgt);
            let st = m.engine.state();
            let grains: BTreeMap<u32, u16> = st.grains.tracks().map(|t| (t.0, st.grains.get(t))).collect();
            prop_assert_eq!(&grains, &m.grains, "preserved grains of {}->{}", m.src, m.tgt);
        }
        Ok(())
    }
}

fn track_bytes(t: u32) -> (usize, usize) {
    let a = t as u64 * TRACK_BYTES;
    (a as usize, (a + TRACK_BYTES).min(SIZE) as usize)
}

fn run_model(cases: u32, mutant: Option<Mutant>) -> Result<(), String> {
    let config = Config { cases, max_shrink_iters: if mutant.is_some() { 0 } else { 512 }, ..Config::default() };
    let mut runner = TestRunner::new(config);
    runner
        .run(&proptest::collection::vec(op(), 1..64), |ops| {
            mutant::with(mutant, || {
                let mut w = World::new();
                for op in &ops {
                    w.step(op)?;
                }
                Ok(())
            })
        })
        .map_err(|e| e.to_string())
}

fn cases() -> u32 {
    std::env::var("FLASHTRACK_MODEL_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(256)
}

#[test]
fn flashcopy_matches_the_model() {
    let n = cases();
    println!("model: {n} cases of up to 64 steps (FLASHTRACK_MODEL_CASES to change)");
    if let Err(e) = run_model(n, None) {
        panic!("{e}");
    }
}

#[test]
fn known_bad_variants_are_caught() {
    for m in [
        Mutant::NoPartialMerge,
        Mutant::NoTargetRecording,
        Mutant::ClearBeforePersist,
        Mutant::CowAfterWrite,
        Mutant::CopierOverwrites,
        Mutant::CopierIgnoresGrains,
        Mutant::ReadIgnoresGrains,
    ] {
        let caught = run_model(cases(), Some(m));
        assert!(caught.is_err(), "mutant {m:?} survived {} cases: the model cannot see it", cases());
        println!("mutant {m:?} caught: {}", caught.unwrap_err().lines().next().unwrap_or(""));
    }
}
