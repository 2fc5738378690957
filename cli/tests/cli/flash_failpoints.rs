//! Crash at each ordering point of the FlashCopy data path (built with
//! `--features failpoints`; scripts/test.sh runs it): flashd aborts there, as a kill -9 at
//! exactly that instant, then restarts and must show the point in time intact and converge
//! on a resync.

use crate::site_proc::{Daemon, all_ok, fb_request};
use flashtrack::control::{Reply, Request, Response};
use flashtrack::flash::relationship::{FlashOptions, FlashState};
use flashtrack::geometry::{CapType, TRACK_BYTES};
use flashtrack::id::{ImageId, VolumeId};
use flashtrack::image::record::Sam;
use flashtrack::nbd::client::{Client, Endpoint};
use std::time::Duration;

const TRACKS: u64 = 64;

fn pair() -> Vec<(VolumeId, VolumeId)> {
    vec![(VolumeId(0x1000), VolumeId(0x1001))]
}

fn client(d: &Daemon, vol: &str) -> Client {
    Client::connect(&Endpoint::Unix(d.nbd_sock()), &format!("IBM.2107-75FA120/{vol}")).expect("connect")
}

fn read_all(d: &Daemon, vol: &str) -> Vec<u8> {
    let mut c = client(d, vol);
    let mut buf = vec![0u8; (TRACKS * TRACK_BYTES) as usize];
    c.read(0, &mut buf).expect("read");
    buf
}

/// Which operation reaches each failpoint.
enum Trigger {
    SourceWrite,
    Resync,
}

#[test]
fn crash_at_every_flashcopy_ordering_point() {
    if !cfg!(feature = "failpoints") {
        eprintln!(
            "SKIP crash_at_every_flashcopy_ordering_point: build with --features failpoints (scripts/test.sh does)"
        );
        return;
    }
    let points = [
        ("intercept-intent-set", Trigger::SourceWrite),
        ("cow-target-written", Trigger::SourceWrite),
        ("cow-before-source-write", Trigger::SourceWrite),
        ("alog-before-sync", Trigger::SourceWrite),
        ("resync-persisted", Trigger::Resync),
        ("checkpoint-before-rename", Trigger::Resync),
        ("resync-checkpointed", Trigger::Resync),
        ("catalog-before-rename", Trigger::Resync),
    ];
    let img: ImageId = "IBM.2107-75FA120".parse().unwrap();
    let options = FlashOptions { record: true, persist: true, nocopy: true, ..FlashOptions::default() };
    for (point, trigger) in points {
        let home = tempfile::tempdir().unwrap();
        let d = Daemon::start(home.path());
        d.ok(Request::ImageCreate { id: img.clone() });
        all_ok(d.ok(fb_request(&img, 0, TRACKS * 128, CapType::Blocks, Sam::Ese, &[0x1000, 0x1001])));
        let mut c = client(&d, "1000");
        c.write(0, &vec![0x11; (TRACKS * TRACK_BYTES) as usize], true).unwrap();
        drop(c);
        all_ok(d.ok(Request::FlashCreate { image: img.clone(), pairs: pair(), options: options.clone() }));
        let t0 = read_all(&d, "1000");
        // One acknowledged change before the crash, so the resync has work.
        client(&d, "1000").write(3 * TRACK_BYTES, &[0x22; 4096], true).unwrap();
        assert_eq!(d.stop(), Some(0));

        let d = Daemon::start_env(home.path(), &[("FLASHTRACK_FAILPOINT", point)]);
        match trigger {
            Trigger::SourceWrite => {
                // A cold extent far away so the activity log appends (alog-before-sync).
                if let Ok(mut c) = Client::connect(&Endpoint::Unix(d.nbd_sock()), "IBM.2107-75FA120/1000") {
                    let _ = c.write(40 * TRACK_BYTES, &[0x33; 8192], false);
                }
            }
            Trigger::Resync => {
                if let Ok(mut c) = flashtrack::control::Client::connect(&d.home.join("control.sock")) {
                    let _ = c.call(Request::FlashResync {
                        image: img.clone(),
                        pairs: pair(),
                        options: options.clone(),
                        seqnum: None,
                    });
                }
            }
        }
        assert!(d.wait_exit(Duration::from_secs(20)), "failpoint {point} was not hit");

        let d = Daemon::start(home.path());
        let Reply::Flash(v) = d.ok(Request::FlashList { image: img.clone() }) else { panic!() };
        assert_eq!(v.len(), 1, "{point}: the relationship is gone");
        assert_eq!(v[0].record.state, FlashState::Valid, "{point}: a process crash must not invalidate the pair");
        // Invariant 1 (nocp: nothing was copied in the background): before any resync
        // completed, the target is exactly T0; after one, exactly the source.
        let target = read_all(&d, "1001");
        let source = read_all(&d, "1000");
        assert!(target == t0 || target == source, "{point}: target is neither T0 nor the resynced image");
        // And a resync converges, copying at least the acknowledged change.
        let r = d.client().call(Request::FlashResync {
            image: img.clone(),
            pairs: pair(),
            options: options.clone(),
            seqnum: None,
        });
        assert!(matches!(r, Ok(Response::Ok(_))), "{point}: resync after restart: {r:?}");
        let Reply::Flash(v) = d.ok(Request::FlashList { image: img.clone() }) else { panic!() };
        assert!(v[0].out_of_sync >= 1, "{point}: the acknowledged change was lost");
        let mut c = client(&d, "1001");
        let mut buf = vec![0u8; 4096];
        c.read(3 * TRACK_BYTES, &mut buf).unwrap();
        assert!(buf.iter().all(|&b| b == 0x22), "{point}: target does not show the change after the resync");
        assert!(read_all(&d, "1001") == read_all(&d, "1000"), "{point}: target != source after the resync");
        assert_eq!(d.stop(), Some(0));
    }
}
