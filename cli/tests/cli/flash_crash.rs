//! kill -9 of flashd while hosts write to a FlashCopy source and target and copies run
//! (invariant 3, no lost change, checked both ways, and invariant 1 across crashes).
//!
//! Each round: restart flashd (it recovers from its journals), resync, wait for the copy,
//! and check that (a) target == source (no acknowledged write was lost from the change
//! recording, or the resync would not have copied it), (b) the increment copied at least the
//! acknowledged tracks and at most the acknowledged plus the in-flight ones (nothing marked
//! that was not written), and (c) during the writes, target tracks never written on the
//! target still read as the point in time. Then writes and a kill -9 at a random moment.
//! `FLASHTRACK_KILL_ROUNDS` sets the rounds (20 in CI; scripts can ask for 1000).

use crate::site_proc::{Daemon, all_ok, fb_request};
use flashtrack::control::{Reply, Request};
use flashtrack::flash::relationship::{FlashOptions, FlashState};
use flashtrack::geometry::{CapType, TRACK_BYTES};
use flashtrack::id::{ImageId, VolumeId};
use flashtrack::image::record::Sam;
use flashtrack::nbd::client::{Client, Endpoint};
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const TRACKS: u64 = 256; // 16 MiB volumes
const SRC: u16 = 0x1000;
const TGT: u16 = 0x1001;

fn rounds() -> usize {
    std::env::var("FLASHTRACK_KILL_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(20)
}

fn pair() -> Vec<(VolumeId, VolumeId)> {
    vec![(VolumeId(SRC), VolumeId(TGT))]
}

fn view(d: &Daemon, img: &ImageId, timeout_ms: u64) -> flashtrack::control::FlashView {
    let Reply::Flash(v) = d.ok(Request::FlashWait { image: img.clone(), pairs: pair(), timeout_ms }) else { panic!() };
    v.into_iter().next().expect("the pair exists")
}

fn wait_copied(d: &Daemon, img: &ImageId) -> flashtrack::control::FlashView {
    for _ in 0..600 {
        let v = view(d, img, 500);
        if v.out_of_sync == 0 {
            return v;
        }
    }
    panic!("copy did not finish");
}

fn client(d: &Daemon, vol: u16) -> Client {
    Client::connect(&Endpoint::Unix(d.nbd_sock()), &format!("IBM.2107-75FA120/{vol:04X}")).expect("nbd connect")
}

fn read_all(d: &Daemon, vol: u16) -> Vec<u8> {
    let mut c = client(d, vol);
    let mut buf = vec![0u8; (TRACKS * TRACK_BYTES) as usize];
    for (i, chunk) in buf.chunks_mut(1 << 20).enumerate() {
        c.read(i as u64 * (1 << 20), chunk).expect("read");
    }
    buf
}

#[test]
fn kill9_while_writing_and_copying_loses_no_change() {
    let home = tempfile::tempdir().unwrap();
    let img: ImageId = "IBM.2107-75FA120".parse().unwrap();
    let mut seed = 0x2545F4914F6CDD1Du64;
    let mut rnd = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    // Tracks written (acknowledged / in flight at the kill) since the last increment.
    let mut acked: BTreeSet<u64> = BTreeSet::new();
    let mut inflight: BTreeSet<u64> = BTreeSet::new();
    let options = FlashOptions { record: true, persist: true, ..FlashOptions::default() };
    for round in 0..rounds() {
        let d = Daemon::start(home.path());
        if round == 0 {
            d.ok(Request::ImageCreate { id: img.clone() });
            all_ok(d.ok(fb_request(&img, 0, TRACKS * 128, CapType::Blocks, Sam::Ese, &[SRC, TGT])));
            let mut c = client(&d, SRC);
            for t in 0..TRACKS {
                c.write(t * TRACK_BYTES, &vec![(t % 251) as u8 + 1; TRACK_BYTES as usize], false).unwrap();
            }
            c.flush().unwrap();
            all_ok(d.ok(Request::FlashCreate { image: img.clone(), pairs: pair(), options: options.clone() }));
            wait_copied(&d, &img);
        } else {
            let v = view(&d, &img, 0);
            assert_eq!(
                v.record.state,
                FlashState::Valid,
                "round {round}: a process crash must not invalidate the pair"
            );
            all_ok(d.ok(Request::FlashResync {
                image: img.clone(),
                pairs: pair(),
                options: options.clone(),
                seqnum: None,
            }));
            let v = wait_copied(&d, &img);
            let marked = v.copied;
            let most: BTreeSet<u64> = acked.union(&inflight).copied().collect();
            assert!(
                marked >= acked.len() as u64,
                "round {round}: {} acknowledged tracks but only {marked} marked",
                acked.len()
            );
            assert!(
                marked <= most.len() as u64,
                "round {round}: {marked} marked but only {} written or in flight",
                most.len()
            );
            assert!(
                read_all(&d, SRC) == read_all(&d, TGT),
                "round {round}: target differs from source after the resync"
            );
            acked.clear();
            inflight.clear();
        }
        // T0 of this increment, as a host sees the source now.
        let t0 = read_all(&d, SRC);
        // Writers on both sides; the test process is the host and logs its acks.
        let log = Arc::new(Mutex::new((BTreeSet::<u64>::new(), BTreeSet::<u64>::new(), BTreeSet::<u64>::new())));
        let stop = Arc::new(AtomicBool::new(false));
        let mut writers = Vec::new();
        for (vol, salt) in [(SRC, rnd()), (TGT, rnd())] {
            let (log, stop) = (log.clone(), stop.clone());
            let mut c = client(&d, vol);
            writers.push(std::thread::spawn(move || {
                let mut s = salt | 1;
                while !stop.load(Ordering::SeqCst) {
                    s ^= s << 13;
                    s ^= s >> 7;
                    s ^= s << 17;
                    let t = s % TRACKS;
                    let partial = s % 3 == 0;
                    let (off, len) =
                        if partial { (t * TRACK_BYTES + 4096, 8192) } else { (t * TRACK_BYTES, TRACK_BYTES) };
                    log.lock().unwrap().1.insert(t);
                    if c.write(off, &vec![(s >> 24) as u8 | 1; len as usize], s % 5 == 0).is_err() {
                        break;
                    }
                    let mut l = log.lock().unwrap();
                    l.0.insert(t);
                    if vol == TGT {
                        l.2.insert(t);
                    }
                }
            }));
        }
        // Meanwhile the target's untouched tracks still read as T0.
        std::thread::sleep(Duration::from_millis(20 + rnd() % 60));
        let mut reader = client(&d, TGT);
        let mut buf = vec![0u8; TRACK_BYTES as usize];
        for _ in 0..8 {
            let t = rnd() % TRACKS;
            let before_read: BTreeSet<u64> = log.lock().unwrap().1.clone();
            reader.read(t * TRACK_BYTES, &mut buf).unwrap();
            let target_written = log.lock().unwrap().2.contains(&t) || before_read.contains(&t);
            if !target_written {
                let range = (t * TRACK_BYTES) as usize..((t + 1) * TRACK_BYTES) as usize;
                assert!(buf == t0[range], "round {round}: target track {t} lost its point in time");
            }
        }
        std::thread::sleep(Duration::from_millis(rnd() % 120));
        d.kill9();
        stop.store(true, Ordering::SeqCst);
        for w in writers {
            let _ = w.join();
        }
        let l = log.lock().unwrap();
        acked.extend(l.0.iter().copied());
        inflight.extend(l.1.difference(&l.0).copied());
    }
}
