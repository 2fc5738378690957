//! Structured replies, BLOCK_STATUS and CACHE over real sockets, driven byte by byte: what
//! qemu and libnbd negotiate, and the malformed cases they never send.

use super::Extent;
use super::client::Endpoint;
use super::proto::{self, ChunkHeader};
use super::tests::{GRANULE, MEM_BITMAP, RO, VOL, closed, raw_go, reply, req, start};
use super::transmission::descriptors;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::atomic::Ordering;
use std::time::Duration;

const ALLOC: &str = proto::CONTEXT_ALLOCATION;

fn bitmap() -> String {
    format!("{}{MEM_BITMAP}", proto::DIRTY_BITMAP_PREFIX)
}

fn opt(s: &mut UnixStream, option: u32, data: &[u8]) -> Vec<(u32, Vec<u8>)> {
    s.write_all(&proto::encode_option_header(option, data.len() as u32)).unwrap();
    s.write_all(data).unwrap();
    let mut out = Vec::new();
    loop {
        let mut hb = [0u8; proto::OPTION_REPLY_HEADER_LEN];
        s.read_exact(&mut hb).unwrap();
        let h = proto::decode_option_reply_header(&hb).unwrap();
        let mut d = vec![0u8; h.length as usize];
        s.read_exact(&mut d).unwrap();
        let last = h.reply_type == proto::REP_ACK || proto::is_rep_err(h.reply_type);
        out.push((h.reply_type, d));
        if last {
            return out;
        }
    }
}

/// Greeting, STRUCTURED_REPLY, SET_META_CONTEXT(`set_on`, `queries`), GO(`name`). Returns
/// the socket in transmission and the (id, name) pairs the SET returned.
fn raw_structured(ep: &Endpoint, set_on: &str, queries: &[&str], name: &str) -> (UnixStream, Vec<(u32, String)>) {
    let Endpoint::Unix(p) = ep else { panic!() };
    let mut s = UnixStream::connect(p).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.read_exact(&mut [0u8; proto::GREETING_LEN]).unwrap();
    s.write_all(&3u32.to_be_bytes()).unwrap();
    assert_eq!(opt(&mut s, proto::OPT_STRUCTURED_REPLY, &[])[0].0, proto::REP_ACK);
    let replies = opt(&mut s, proto::OPT_SET_META_CONTEXT, &proto::encode_meta_context_request(set_on, queries));
    let mut ids = Vec::new();
    for (ty, d) in replies {
        match ty {
            proto::REP_META_CONTEXT => ids.push(proto::decode_rep_meta_context(&d).unwrap()),
            proto::REP_ACK => {}
            other => panic!("SET_META_CONTEXT answered {other:#x}"),
        }
    }
    let go = opt(&mut s, proto::OPT_GO, &proto::encode_info_request(name, &[]));
    assert_eq!(go.last().unwrap().0, proto::REP_ACK);
    (s, ids)
}

/// One reply: simple (error) or structured chunks up to the DONE flag.
#[derive(Debug)]
enum Reply {
    Simple(proto::SimpleReply),
    Chunks(Vec<(ChunkHeader, Vec<u8>)>),
}

fn read_reply(s: &mut UnixStream) -> Reply {
    let mut chunks = Vec::new();
    loop {
        let mut m = [0u8; 4];
        s.read_exact(&mut m).unwrap();
        if proto::reply_magic(&m) == Ok(proto::SIMPLE_REPLY_MAGIC) {
            assert!(chunks.is_empty(), "simple reply in the middle of a structured one");
            let mut rest = [0u8; 12];
            s.read_exact(&mut rest).unwrap();
            let b: Vec<u8> = m.iter().chain(rest.iter()).copied().collect();
            return Reply::Simple(proto::decode_simple_reply(&b).unwrap());
        }
        let mut rest = [0u8; proto::CHUNK_HEADER_LEN - 4];
        s.read_exact(&mut rest).unwrap();
        let b: Vec<u8> = m.iter().chain(rest.iter()).copied().collect();
        let h = proto::decode_chunk_header(&b).unwrap();
        let mut payload = vec![0u8; h.length as usize];
        s.read_exact(&mut payload).unwrap();
        let done = h.flags & proto::REPLY_FLAG_DONE != 0;
        chunks.push((h, payload));
        if done {
            return Reply::Chunks(chunks);
        }
    }
}

/// The (errno, message) of a reply that must be a single structured error chunk.
fn error_chunk(s: &mut UnixStream) -> (u32, String) {
    let Reply::Chunks(c) = read_reply(s) else { panic!("expected an error chunk") };
    assert_eq!(c.len(), 1);
    assert_eq!(c[0].0.ty, proto::REPLY_TYPE_ERROR);
    proto::decode_chunk_error(&c[0].1).unwrap()
}

/// Block status descriptors per context id; the reply must end with a NONE chunk.
fn status(s: &mut UnixStream, cookie: u64, flags: u16, offset: u64, len: u32) -> Vec<(u32, Vec<(u32, u32)>)> {
    req(s, proto::CMD_BLOCK_STATUS, flags, cookie, offset, len);
    let Reply::Chunks(c) = read_reply(s) else { panic!("block status answered with a simple reply") };
    let (last, body) = c.split_last().unwrap();
    assert_eq!((last.0.ty, last.0.cookie), (proto::REPLY_TYPE_NONE, cookie));
    body.iter()
        .map(|(h, p)| {
            assert_eq!((h.ty, h.cookie), (proto::REPLY_TYPE_BLOCK_STATUS, cookie));
            proto::decode_block_status(p).unwrap()
        })
        .collect()
}

fn write(s: &mut UnixStream, cookie: u64, offset: u64, data: &[u8]) {
    req(s, proto::CMD_WRITE, 0, cookie, offset, data.len() as u32);
    s.write_all(data).unwrap();
    let Reply::Simple(r) = read_reply(s) else { panic!("write answered with chunks") };
    assert_eq!((r.error, r.cookie), (0, cookie));
}

#[test]
fn structured_reads_and_errors() {
    let (_d, _cat, h, ep) = start();
    let (mut s, ids) = raw_structured(&ep, VOL, &[], VOL);
    assert!(ids.is_empty(), "an empty SET selects nothing");
    write(&mut s, 1, 4096, b"structured");
    req(&mut s, proto::CMD_READ, 0, 2, 4096, 10);
    let Reply::Chunks(c) = read_reply(&mut s) else { panic!() };
    assert_eq!(c.len(), 1);
    assert_eq!((c[0].0.ty, c[0].0.flags, c[0].0.cookie), (proto::REPLY_TYPE_OFFSET_DATA, proto::REPLY_FLAG_DONE, 2));
    assert_eq!(&c[0].1[..8], &4096u64.to_be_bytes());
    assert_eq!(&c[0].1[8..], b"structured");
    // A zero-length read: just NONE.
    req(&mut s, proto::CMD_READ, 0, 3, 0, 0);
    let Reply::Chunks(c) = read_reply(&mut s) else { panic!() };
    assert_eq!((c.len(), c[0].0.ty), (1, proto::REPLY_TYPE_NONE));
    // Errors on READ are error chunks with a message, never simple replies.
    req(&mut s, proto::CMD_READ, 0, 4, (64 << 20) - 512, 1024);
    let (e, msg) = error_chunk(&mut s);
    assert_eq!(e, proto::EINVAL);
    assert!(msg.contains("past the end"), "{msg}");
    req(&mut s, proto::CMD_READ, 0, 5, 0, proto::MAX_PAYLOAD + 1);
    assert_eq!(error_chunk(&mut s).0, proto::EINVAL);
    req(&mut s, proto::CMD_READ, proto::CMD_FLAG_REQ_ONE, 6, 0, 512);
    assert_eq!(error_chunk(&mut s).0, proto::EINVAL);
    req(&mut s, 0x42, 0, 7, 0, 0);
    assert!(error_chunk(&mut s).1.contains("unknown command"));
    // No context was selected: BLOCK_STATUS is refused.
    req(&mut s, proto::CMD_BLOCK_STATUS, 0, 8, 0, 4096);
    let (e, msg) = error_chunk(&mut s);
    assert_eq!(e, proto::EINVAL);
    assert!(msg.contains("context"), "{msg}");
    // Still in frame after all of that.
    write(&mut s, 9, 0, b"ok");
    h.shutdown();
}

#[test]
fn block_status_allocation_and_dirty_bitmap() {
    let (_d, _cat, h, ep) = start();
    let (mut s, ids) = raw_structured(&ep, VOL, &[&bitmap(), ALLOC, "x-unknown:thing", "base:"], VOL);
    assert_eq!(ids, vec![(1, ALLOC.to_owned()), (2, bitmap())]);
    // Granule 3 gets data; granule 5 is written with zeros (dirty, yet reads zero).
    write(&mut s, 1, 3 * GRANULE + 100, &[7u8; 300]);
    write(&mut s, 2, 5 * GRANULE, &vec![0u8; GRANULE as usize]);
    let hz = proto::STATE_HOLE | proto::STATE_ZERO;
    let g = GRANULE as u32;
    let got = status(&mut s, 3, 0, 0, 8 * g);
    assert_eq!(got.len(), 2);
    let by_id = |id: u32| got.iter().find(|(c, _)| *c == id).unwrap().1.clone();
    assert_eq!(by_id(1), vec![(3 * g, hz), (g, 0), (4 * g, hz)]);
    assert_eq!(by_id(2), vec![(3 * g, 0), (g, proto::STATE_DIRTY), (g, 0), (g, proto::STATE_DIRTY), (2 * g, 0)]);
    // Unaligned start and end: descriptors are clipped to the request, never past it.
    let got = status(&mut s, 4, 0, 3 * GRANULE + 512, 1024);
    assert_eq!(got.iter().map(|(_, d)| d.clone()).collect::<Vec<_>>(), vec![vec![(1024, 0)], vec![(1024, 1)]]);
    // REQ_ONE: one descriptor per context, within the request.
    for (_, d) in status(&mut s, 5, proto::CMD_FLAG_REQ_ONE, 0, 8 * g) {
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].0, 3 * g);
    }
    // Malformed block status requests.
    req(&mut s, proto::CMD_BLOCK_STATUS, 0, 6, (64 << 20) - 512, 1024);
    assert_eq!(error_chunk(&mut s).0, proto::EINVAL);
    req(&mut s, proto::CMD_BLOCK_STATUS, 0, 7, 0, 0);
    assert_eq!(error_chunk(&mut s).0, proto::EINVAL);
    req(&mut s, proto::CMD_BLOCK_STATUS, proto::CMD_FLAG_NO_HOLE, 8, 0, 512);
    assert_eq!(error_chunk(&mut s).0, proto::EINVAL);
    h.shutdown();
}

#[test]
fn a_vanished_bitmap_fails_its_query_alone() {
    let (_d, cat, h, ep) = start();
    let (mut s, ids) = raw_structured(&ep, VOL, &[&bitmap()], VOL);
    assert_eq!(ids.len(), 1);
    cat.exports[VOL].bitmap_gone.store(true, Ordering::Relaxed);
    req(&mut s, proto::CMD_BLOCK_STATUS, 0, 1, 0, 4096);
    let (e, msg) = error_chunk(&mut s);
    assert_eq!(e, proto::EINVAL);
    assert!(msg.contains("gone"), "{msg}");
    write(&mut s, 2, 0, b"still served");
    h.shutdown();
}

#[test]
fn contexts_set_on_another_export_do_not_carry_over() {
    let (_d, _cat, h, ep) = start();
    // SET names RO, GO opens VOL: the session has no contexts (the spec's rule).
    let (mut s, ids) = raw_structured(&ep, RO, &[ALLOC], VOL);
    assert_eq!(ids.len(), 1);
    req(&mut s, proto::CMD_BLOCK_STATUS, 0, 1, 0, 4096);
    assert_eq!(error_chunk(&mut s).0, proto::EINVAL);
    h.shutdown();
}

#[test]
fn simple_sessions_refuse_block_status_and_take_cache() {
    let (_d, cat, h, ep) = start();
    let mut s = raw_go(&ep, VOL);
    req(&mut s, proto::CMD_BLOCK_STATUS, 0, 1, 0, 4096);
    assert_eq!(reply(&mut s).error, proto::EINVAL);
    req(&mut s, proto::CMD_CACHE, 0, 2, 1 << 20, 4 << 20);
    assert_eq!(reply(&mut s), proto::SimpleReply { error: 0, cookie: 2 });
    req(&mut s, proto::CMD_CACHE, 0, 3, (64 << 20) - 4096, 8192);
    assert_eq!(reply(&mut s).error, proto::EINVAL);
    req(&mut s, proto::CMD_CACHE, proto::CMD_FLAG_REQ_ONE, 4, 0, 4096);
    assert_eq!(reply(&mut s).error, proto::EINVAL);
    // Cache on a read-only export is fine (it only reads).
    let mut r = raw_go(&ep, RO);
    req(&mut r, proto::CMD_CACHE, 0, 5, 0, 4096);
    assert_eq!(reply(&mut r).error, 0);
    assert_eq!(*cat.exports[VOL].cached.lock().unwrap(), vec![(1 << 20, 4 << 20)]);
    req(&mut s, proto::CMD_DISC, 0, 6, 0, 0);
    assert!(closed(&mut s));
    h.shutdown();
}

#[test]
fn descriptors_clip_merge_and_limit() {
    let e = |len, flags| Extent { len, flags };
    // Clipped to the request, zero-length dropped, equal neighbours merged.
    let d = descriptors(&[e(100, 1), e(0, 2), e(50, 1), e(1000, 3)], 400, false);
    assert_eq!(d, vec![(150, 1), (250, 3)]);
    assert_eq!(descriptors(&[e(100, 1), e(300, 0)], 400, true), vec![(100, 1)]);
    assert!(descriptors(&[], 400, false).is_empty());
    // Never more than MAX_DESCRIPTORS.
    let many: Vec<Extent> = (0..proto::MAX_DESCRIPTORS + 10).map(|i| e(1, (i % 2) as u32)).collect();
    assert_eq!(descriptors(&many, u32::MAX, false).len(), proto::MAX_DESCRIPTORS);
}

#[test]
fn block_size_info_advertises_the_track() {
    let (_d, _cat, h, ep) = start();
    let Endpoint::Unix(p) = &ep else { panic!() };
    let mut s = UnixStream::connect(p).unwrap();
    s.read_exact(&mut [0u8; proto::GREETING_LEN]).unwrap();
    s.write_all(&3u32.to_be_bytes()).unwrap();
    let infos = opt(&mut s, proto::OPT_INFO, &proto::encode_info_request(VOL, &[proto::INFO_BLOCK_SIZE]));
    let bs: Vec<proto::Info> = infos
        .iter()
        .filter(|(t, _)| *t == proto::REP_INFO)
        .map(|(_, d)| proto::decode_info(d).unwrap())
        .filter(|i| matches!(i, proto::Info::BlockSize { .. }))
        .collect();
    assert_eq!(bs, vec![proto::Info::BlockSize { min: 512, preferred: 64 << 10, max: proto::MAX_PAYLOAD }]);
    drop(s);
    h.shutdown();
}
