//! `LinkList` and `LinkSet` (`lslink`, `chlink`): the simulated line of each port pair of a
//! PPRC path, shown and set while the site runs. Settings reach both ends of the link, are
//! kept for a link made again (in-process and over TCP) but not across a restart; counters
//! grow with traffic; an outage shows the port pair down (and `Failed` in `lspprcpath`); bad
//! values and selections that name nothing are refused with nothing changed.

use crate::fixture::{TestSite, fb, items_ok};
use flashtrack::control::{LinkChange, LinkView, PathState, Reply, Request};
use flashtrack::error::ErrorKind;
use flashtrack::id::{ImageId, LssId};
use flashtrack::link::{LinkProps, LinkStats};
use std::time::{Duration, Instant};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn mkpath(img: &ImageId, remote: &ImageId, src: u8, tgt: u8, p: &[(&str, &str)]) -> Request {
    Request::PprcPathCreate {
        image: img.clone(),
        remote: remote.clone(),
        remote_wwnn: remote.wwnn(),
        src_lss: LssId(src),
        tgt_lss: LssId(tgt),
        consistgrp: false,
        ports: p.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect(),
    }
}

fn links(t: &TestSite, img: &ImageId) -> Vec<LinkView> {
    let Reply::Links(v) = t.ok(Request::LinkList { image: img.clone() }) else { panic!("expected Links") };
    v
}

fn set(img: &ImageId, lss: Option<(u8, u8)>, ports: &[(&str, &str)], change: LinkChange) -> Request {
    Request::LinkSet {
        image: img.clone(),
        remote: None,
        lss: lss.map(|(s, t)| (LssId(s), LssId(t))),
        ports: ports.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect(),
        change,
    }
}

fn path_states(t: &TestSite, img: &ImageId) -> Vec<PathState> {
    let Reply::PprcPaths(p) = t.ok(Request::PprcPathList { image: img.clone() }) else { panic!() };
    p.iter().flat_map(|v| v.ports.iter().map(|p| p.state)).collect()
}

/// Polls `f` for up to 5 s (the other end learns of a change in a control frame).
fn eventually(what: &str, f: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(ms(10));
    }
}

/// Images A (FB LSS 10) and B (FB LSS 11); path A 10 -> B 11 over two port pairs and the
/// path back B 11 -> A 10 over the first pair's ports (the same link).
fn setup() -> (TestSite, ImageId, ImageId) {
    let t = TestSite::new();
    let a = t.image("IBM.2107-75FA120");
    let b = t.image("IBM.2107-75FA150");
    items_ok(t.ok(fb(&a, 0, 1, &[0x1000])));
    items_ok(t.ok(fb(&b, 1, 1, &[0x1100])));
    items_ok(t.ok(mkpath(&a, &b, 0x10, 0x11, &[("I0000", "I0001"), ("I0002", "I0003")])));
    items_ok(t.ok(mkpath(&b, &a, 0x11, 0x10, &[("I0001", "I0000")])));
    (t, a, b)
}

const SLOW: LinkChange = LinkChange {
    bandwidth: Some(1 << 20),
    latency: Some(Duration::from_millis(3)),
    jitter: Some(Duration::from_millis(1)),
    loss: Some(0.125),
    rto: Some(Duration::from_millis(20)),
    outage: None,
};

#[test]
fn lslink_shows_each_port_pair_and_chlink_reaches_both_ends() {
    let (t, a, b) = setup();
    let v = links(&t, &a);
    assert_eq!(v.len(), 2);
    assert_eq!((v[0].src_lss, v[0].tgt_lss, &v[0].remote), (LssId(0x10), LssId(0x11), &b));
    assert_eq!((v[0].port.as_str(), v[0].attached.as_str()), ("I0000", "I0001"));
    assert_eq!((v[1].port.as_str(), v[1].attached.as_str()), ("I0002", "I0003"));
    assert!(v.iter().all(|v| v.up && v.props == LinkProps::default() && v.stats.is_some()));

    let r = items_ok(t.ok(set(&a, Some((0x10, 0x11)), &[("i0000", "i0001")], SLOW)));
    assert_eq!(r.iter().map(|i| i.object.as_str()).collect::<Vec<_>>(), ["10:11 I0000:I0001"]);
    let want = SLOW.apply(LinkProps::default());
    let v = links(&t, &a);
    assert_eq!(v[0].props, want);
    assert!(v[0].up, "a slow line is up");
    assert_eq!(v[1].props, LinkProps::default(), "the other port pair is untouched");
    // The other end (B's path back over the same ports) shapes with the same line.
    eventually("B's end has the new line", || links(&t, &b)[0].props == want);
    let theirs = t.site().path_link(&b, "I0001", &a, "I0000").unwrap();
    assert_eq!(theirs.local().port, 0x0001, "B's end of the link");
    assert_eq!(theirs.props(), want);
    // Still usable: a round trip takes at least twice the latency.
    let rtt = t.site().path_link(&a, "I0000", &b, "I0001").unwrap().ping(Duration::from_secs(5)).unwrap();
    assert!(rtt >= ms(6), "{rtt:?}");

    // One field at a time; the others keep their values. Unlimited bandwidth is 0.
    let unlimited = LinkChange { bandwidth: Some(0), ..LinkChange::default() };
    items_ok(t.ok(set(&a, None, &[], unlimited)));
    let v = links(&t, &a);
    assert_eq!(v[0].props, LinkProps { bandwidth: 0, ..want });
    assert_eq!(v[1].props, LinkProps::default());
    // From B, the selection by remote image and LSS pair.
    let r = Request::LinkSet {
        image: b.clone(),
        remote: Some(a.clone()),
        lss: Some((LssId(0x11), LssId(0x10))),
        ports: vec![],
        change: LinkChange { latency: Some(ms(7)), ..LinkChange::default() },
    };
    assert_eq!(items_ok(t.ok(r))[0].object, "11:10 I0001:I0000");
    eventually("A's end has B's change", || links(&t, &a)[0].props.latency == ms(7));
}

#[test]
fn counters_grow_with_pings() {
    let (t, a, _b) = setup();
    let before: Vec<LinkStats> = links(&t, &a).iter().map(|v| v.stats.unwrap()).collect();
    assert_eq!(path_states(&t, &a), [PathState::Success, PathState::Success], "lspprcpath pings each pair");
    eventually("both pairs counted a ping each way", || {
        links(&t, &a).iter().zip(&before).all(|(v, b)| {
            let s = v.stats.unwrap();
            s.tx_messages > b.tx_messages
                && s.rx_messages > b.rx_messages
                && s.tx_bytes > b.tx_bytes
                && s.rx_bytes > b.rx_bytes
        })
    });
    let s = links(&t, &a)[0].stats.unwrap();
    assert_eq!((s.retransmissions, s.outcome_unknown, s.in_flight), (0, 0, 0));
}

#[test]
fn an_outage_shows_down_and_the_path_failed() {
    let (t, a, b) = setup();
    let outage = |on| LinkChange { outage: Some(on), ..LinkChange::default() };
    let r = items_ok(t.ok(set(&a, None, &[], outage(true))));
    assert_eq!(r.len(), 2);
    let v = links(&t, &a);
    assert!(v.iter().all(|v| !v.up && v.props.outage && v.stats.is_some()), "connected, but down");
    assert_eq!(path_states(&t, &a), [PathState::FailedSecondaryUnavailable; 2]);
    eventually("B sees the outage", || !links(&t, &b)[0].up);
    let link = t.site().path_link(&a, "I0000", &b, "I0001").unwrap();
    assert_eq!(link.ping(ms(500)).unwrap_err().kind, ErrorKind::LinkDown);
    items_ok(t.ok(set(&a, Some((0x10, 0x11)), &[("I0002", "I0003")], outage(false))));
    assert_eq!(path_states(&t, &a), [PathState::FailedSecondaryUnavailable, PathState::Success]);
    items_ok(t.ok(set(&a, None, &[], outage(false))));
    assert!(links(&t, &a).iter().all(|v| v.up && !v.props.outage));
    assert_eq!(path_states(&t, &a), [PathState::Success; 2]);
}

#[test]
fn bad_values_and_empty_selections_change_nothing() {
    let (t, a, b) = setup();
    items_ok(t.ok(set(&a, None, &[], SLOW)));
    eventually("B's end has the line", || links(&t, &b)[0].props == SLOW.apply(LinkProps::default()));
    let props = |t: &TestSite| -> Vec<LinkProps> {
        let mut p: Vec<LinkProps> = links(t, &a).iter().map(|v| v.props).collect();
        p.extend(links(t, &b).iter().map(|v| v.props));
        p
    };
    let before = props(&t);
    let c = |f: fn(&mut LinkChange)| {
        let mut ch = LinkChange { bandwidth: Some(5 << 20), ..LinkChange::default() };
        f(&mut ch);
        ch
    };
    let refused = [
        (set(&a, None, &[], c(|c| c.loss = Some(1.0))), ErrorKind::InvalidArgument),
        (set(&a, None, &[], c(|c| c.loss = Some(-0.1))), ErrorKind::InvalidArgument),
        (set(&a, None, &[], c(|c| c.latency = Some(Duration::from_secs(11)))), ErrorKind::InvalidArgument),
        (set(&a, None, &[], c(|c| c.jitter = Some(Duration::from_secs(11)))), ErrorKind::InvalidArgument),
        (set(&a, None, &[], c(|c| c.rto = Some(Duration::ZERO))), ErrorKind::InvalidArgument),
        (set(&a, None, &[], c(|c| c.rto = Some(Duration::from_secs(11)))), ErrorKind::InvalidArgument),
        (set(&a, None, &[], LinkChange::default()), ErrorKind::InvalidArgument),
        (set(&a, Some((0x10, 0x12)), &[], c(|_| {})), ErrorKind::PprcPathNotFound),
        (set(&a, Some((0x10, 0x11)), &[("I0001", "I0001")], c(|_| {})), ErrorKind::PprcPathNotFound),
        (set(&t.id("IBM.2107-75FA190"), None, &[], c(|_| {})), ErrorKind::ImageNotFound),
        (
            Request::LinkSet { image: a.clone(), remote: Some(a.clone()), lss: None, ports: vec![], change: c(|_| {}) },
            ErrorKind::PprcPathNotFound,
        ),
    ];
    for (req, kind) in refused {
        t.unchanged(&a, |t| assert_eq!(t.err(req.clone()), kind, "{req:?}"));
        assert_eq!(props(&t), before, "{req:?} changed a link");
    }
    assert_eq!(t.err(Request::LinkList { image: t.id("IBM.2107-75FA190") }), ErrorKind::ImageNotFound);
    // An image without paths lists nothing.
    let c = t.image("IBM.2107-75FA190");
    assert!(links(&t, &c).is_empty());
}

#[test]
fn settings_survive_a_reconnect_but_not_a_restart() {
    let (mut t, a, b) = setup();
    let pair = [("I0000", "I0001")];
    items_ok(t.ok(set(&a, Some((0x10, 0x11)), &pair, SLOW)));
    // The link drops (both ends close).
    t.site().path_link(&a, "I0000", &b, "I0001").unwrap().close();
    eventually("the link is gone", || t.site().path_link(&a, "I0000", &b, "I0001").is_none());
    let v = &links(&t, &a)[0];
    assert!(!v.up && v.stats.is_none());
    assert_eq!(v.props, SLOW.apply(LinkProps::default()), "shown while the link is down");
    // A setting made while there is no link is kept for it too.
    items_ok(t.ok(set(&a, None, &pair, LinkChange { latency: Some(ms(4)), ..LinkChange::default() })));
    let want = LinkProps { latency: ms(4), ..SLOW.apply(LinkProps::default()) };
    // The next reconcile (here: a new image) makes the link again, with the setting.
    t.image("IBM.2107-75FA190");
    let v = &links(&t, &a)[0];
    assert!(v.up);
    assert_eq!(v.props, want);
    assert_eq!(v.stats.unwrap().tx_messages, 0, "a new link counts from zero");
    eventually("B's end of the new link has it", || links(&t, &b)[0].props == want);
    assert_eq!(links(&t, &a)[1].props, LinkProps::default());

    // A path removed and made again starts afresh.
    items_ok(t.ok(set(&a, None, &[("I0002", "I0003")], SLOW)));
    items_ok(t.ok(mkpath(&a, &b, 0x10, 0x11, &pair)));
    items_ok(t.ok(mkpath(&a, &b, 0x10, 0x11, &[("I0000", "I0001"), ("I0002", "I0003")])));
    assert_eq!(links(&t, &a)[1].props, LinkProps::default(), "the port pair left the paths: forgotten");
    assert_eq!(links(&t, &a)[0].props, want, "a port pair kept by the new port set keeps its setting");

    // Not kept across a restart: defaults.
    t.restart();
    assert!(links(&t, &a).iter().all(|v| v.up && v.props == LinkProps::default()));
}

/// Over TCP to another site: the other flashd's end gets the setting, and a link redialled
/// after that flashd restarts gets it again.
#[test]
fn settings_reach_a_peer_site_and_survive_its_restart() {
    let t = TestSite::new();
    let a = t.image("IBM.2107-75FA120");
    items_ok(t.ok(fb(&a, 0, 1, &[0x1000])));
    let mut tb = TestSite::new();
    let b = tb.image("IBM.2107-75FB150");
    let key = flashtrack::mirror::key_hex(&flashtrack::mirror::site_key(t.home()).unwrap());
    flashtrack::mirror::set_site_key(tb.home(), &key).unwrap();
    let at = tb.site().listen_links("127.0.0.1:0".parse().unwrap()).unwrap();
    flashtrack::mirror::peer_add(t.home(), &b.wwnn(), at).unwrap();
    items_ok(t.ok(mkpath(&a, &b, 0x10, 0x11, &[("I0000", "I0001")])));
    items_ok(t.ok(set(&a, None, &[], SLOW)));
    let want = SLOW.apply(LinkProps::default());
    let theirs = |tb: &TestSite| tb.site().path_link(&b, "I0001", &a, "I0000").map(|l| l.props());
    eventually("B's end has the line", || theirs(&tb) == Some(want));

    tb.restart();
    let at = tb.site().listen_links("127.0.0.1:0".parse().unwrap()).unwrap();
    flashtrack::mirror::peer_add(t.home(), &b.wwnn(), at).unwrap();
    // lspprcpath redials; the new link gets A's remembered setting.
    eventually("the path is up again", || path_states(&t, &a) == [PathState::Success]);
    assert_eq!(links(&t, &a)[0].props, want);
    eventually("B's new end has the line", || theirs(&tb) == Some(want));
}
