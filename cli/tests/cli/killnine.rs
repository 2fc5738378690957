//! kill -9 of flashd in a loop of mkfbvol/rmfbvol: the catalog always opens, and every
//! acknowledged command is there (the one in flight may or may not be).

use crate::site_proc::{Daemon, fb_request};
use flashtrack::control::{Reply, Request, Response};
use flashtrack::geometry::CapType;
use flashtrack::id::{ImageId, VolumeId};
use flashtrack::image::record::Sam;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Rounds in CI; `FLASHTRACK_KILL_ROUNDS` asks for more.
fn rounds() -> usize {
    std::env::var("FLASHTRACK_KILL_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(20)
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Known {
    Present,
    Absent,
    /// A command was in flight at the kill: either outcome is right.
    Either,
}

#[test]
fn kill9_during_volume_commands_keeps_a_sound_catalog() {
    let home = tempfile::tempdir().unwrap();
    let img: ImageId = "IBM.2107-75FA120".parse().unwrap();
    let mut model: BTreeMap<u16, Known> = BTreeMap::new();
    let mut seed = 0x9E3779B97F4A7C15u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for round in 0..rounds() {
        let d = Daemon::start(home.path());
        if round == 0 {
            d.ok(Request::ImageCreate { id: img.clone() });
        }
        // What the restarted daemon must show, given the previous rounds.
        let Reply::Volumes(vols) = d.ok(Request::VolumeList { image: img.clone() }) else { panic!() };
        let present: Vec<u16> = vols.iter().map(|v| v.record.id.0).collect();
        for (vol, known) in &model {
            match known {
                Known::Present => assert!(present.contains(vol), "round {round}: acknowledged volume {vol:04X} lost"),
                Known::Absent => assert!(!present.contains(vol), "round {round}: removed volume {vol:04X} came back"),
                Known::Either => {}
            }
        }
        for vol in model.keys().copied().collect::<Vec<_>>() {
            model.insert(vol, if present.contains(&vol) { Known::Present } else { Known::Absent });
        }

        // Hammer create/remove from a thread; kill -9 after a random delay.
        let shared = Arc::new(Mutex::new(model.clone()));
        let stop = Arc::new(AtomicBool::new(false));
        // (volume, 0 = create, 1 = remove, 2 = grow by some blocks)
        let ops: Vec<(u16, u64)> = (0..200).map(|_| ((0x1000 + (next() % 24)) as u16, next() % 3)).collect();
        let worker = {
            let (shared, stop, img) = (shared.clone(), stop.clone(), img.clone());
            let mut client = d.client();
            std::thread::spawn(move || {
                for (n, (vol, kind)) in ops.into_iter().enumerate() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let was = shared.lock().unwrap().get(&vol).copied().unwrap_or(Known::Absent);
                    shared.lock().unwrap().insert(vol, Known::Either);
                    let req = match kind {
                        0 => fb_request(&img, 0, 128, CapType::Blocks, Sam::Ese, &[vol]),
                        1 => Request::VolumeRemove {
                            image: img.clone(),
                            volumes: vec![VolumeId(vol)],
                            safe: false,
                            stgtype: None,
                        },
                        _ => Request::VolumeChange {
                            image: img.clone(),
                            volume: VolumeId(vol),
                            name: None,
                            grow: Some(flashtrack::control::Capacity::Fb {
                                cap: 128 + n as u64 * 8,
                                captype: CapType::Blocks,
                            }),
                            stgtype: None,
                        },
                    };
                    let ok = match client.call(req) {
                        Ok(Response::Ok(Reply::Items(items))) => items[0].result.is_ok(),
                        Ok(Response::Ok(_)) => true,
                        Ok(Response::Err(_)) => false,
                        Err(_) => break,
                    };
                    let now = match (kind, ok) {
                        (0, true) => Known::Present,
                        (1, true) => Known::Absent,
                        // A grow, or a refusal (exists / not found / shrink): presence unchanged.
                        _ => was,
                    };
                    shared.lock().unwrap().insert(vol, now);
                }
            })
        };
        std::thread::sleep(Duration::from_millis(20 + next() % 150));
        d.kill9();
        stop.store(true, Ordering::SeqCst);
        let _ = worker.join();
        model = shared.lock().unwrap().clone();
    }
    // Finally the catalog opens in-process too, and lists what the model allows.
    let site = flashtrack::site::Site::open(home.path(), flashtrack::io::probe::select().unwrap()).unwrap();
    let Response::Ok(Reply::Volumes(vols)) = site.handle(Request::VolumeList { image: img.clone() }) else { panic!() };
    for v in vols {
        assert_ne!(model.get(&v.record.id.0), Some(&Known::Absent), "volume {} should not exist", v.record.id);
    }
}
