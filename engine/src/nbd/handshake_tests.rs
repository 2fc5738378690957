//! Handshake tests over a socket pair: the server side runs [`negotiate`] in a thread, the test
//! plays the client byte by byte.

use super::*;
use crate::nbd::tests::{MemCatalog, RO, VOL};
use std::os::unix::net::UnixStream;
use std::thread::JoinHandle;
use std::time::Duration;

type Outcome = io::Result<Option<(String, u64, u16)>>;

/// What a finished handshake agreed beyond the export: structured replies, context names.
type Agreement = io::Result<Option<(bool, Vec<String>)>>;

/// Starts `negotiate` on one end of a pair; returns the client end (greeting already read).
fn begin(client_flags: u32) -> (UnixStream, JoinHandle<Outcome>) {
    begin_with(client_flags, |ses| (ses.name, ses.export.size(), tflags(ses.export.as_ref())))
}

/// Like [`begin`], reporting what the session agreed.
fn begin_agreed(client_flags: u32) -> (UnixStream, JoinHandle<Agreement>) {
    begin_with(client_flags, |ses| (ses.structured, ses.contexts.into_iter().map(|c| c.name).collect()))
}

fn begin_with<T: Send + 'static>(
    client_flags: u32,
    f: impl FnOnce(Session) -> T + Send + 'static,
) -> (UnixStream, JoinHandle<io::Result<Option<T>>>) {
    let (mut c, mut s) = UnixStream::pair().unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let cat = MemCatalog::with(&[(VOL, 1 << 20, false), (RO, 4096, true)]);
    let t = std::thread::spawn(move || Ok(negotiate(&mut s, cat.as_ref())?.map(f)));
    let mut g = [0u8; proto::GREETING_LEN];
    c.read_exact(&mut g).unwrap();
    assert_eq!(proto::decode_greeting(&g), Ok(proto::FLAG_FIXED_NEWSTYLE | proto::FLAG_NO_ZEROES));
    c.write_all(&client_flags.to_be_bytes()).unwrap();
    (c, t)
}

const FLAGS: u32 = proto::FLAG_C_FIXED_NEWSTYLE | proto::FLAG_C_NO_ZEROES;

fn opt(c: &mut UnixStream, option: u32, data: &[u8]) {
    c.write_all(&proto::encode_option_header(option, data.len() as u32)).unwrap();
    c.write_all(data).unwrap();
}

fn rep(c: &mut UnixStream) -> (proto::OptionReplyHeader, Vec<u8>) {
    let mut hb = [0u8; proto::OPTION_REPLY_HEADER_LEN];
    c.read_exact(&mut hb).unwrap();
    let h = proto::decode_option_reply_header(&hb).unwrap();
    let mut d = vec![0u8; h.length as usize];
    c.read_exact(&mut d).unwrap();
    (h, d)
}

fn closed(c: &mut UnixStream) -> bool {
    matches!(c.read(&mut [0u8; 1]), Ok(0) | Err(_))
}

#[test]
fn qemu_option_sequence() {
    let (mut c, t) = begin_agreed(FLAGS);
    // What qemu-io sends: EXTENDED_HEADERS (refused), STRUCTURED_REPLY, SET_META_CONTEXT, GO.
    opt(&mut c, proto::OPT_EXTENDED_HEADERS, &[]);
    assert_eq!(rep(&mut c).0.reply_type, proto::REP_ERR_UNSUP);
    opt(&mut c, proto::OPT_STARTTLS, &[]);
    assert_eq!(rep(&mut c).0.reply_type, proto::REP_ERR_UNSUP);
    opt(&mut c, proto::OPT_STRUCTURED_REPLY, &[]);
    assert_eq!(rep(&mut c).0.reply_type, proto::REP_ACK);
    opt(&mut c, proto::OPT_SET_META_CONTEXT, &proto::encode_meta_context_request(VOL, &["base:allocation"]));
    let (h, d) = rep(&mut c);
    assert_eq!((h.option, h.reply_type), (proto::OPT_SET_META_CONTEXT, proto::REP_META_CONTEXT));
    assert_eq!(proto::decode_rep_meta_context(&d), Ok((1, "base:allocation".into())));
    assert_eq!(rep(&mut c).0.reply_type, proto::REP_ACK);
    opt(&mut c, proto::OPT_GO, &proto::encode_info_request(VOL, &[proto::INFO_BLOCK_SIZE]));
    let (h, d) = rep(&mut c);
    assert_eq!(h.reply_type, proto::REP_INFO);
    assert_eq!(proto::decode_info(&d), Ok(proto::Info::Export { size: 1 << 20, tflags: BASE_TFLAGS }));
    let (_, d) = rep(&mut c);
    assert_eq!(proto::decode_info(&d), Ok(proto::Info::BlockSize { min: 512, preferred: 64 << 10, max: 32 << 20 }));
    assert_eq!(rep(&mut c).0.reply_type, proto::REP_ACK);
    assert_eq!(t.join().unwrap().unwrap(), Some((true, vec!["base:allocation".to_string()])));
    assert_ne!(BASE_TFLAGS & proto::TFLAG_SEND_CACHE, 0);
}

/// Reads META_CONTEXT replies up to the ACK (or returns the error reply type).
fn contexts(c: &mut UnixStream) -> Result<Vec<(u32, String)>, u32> {
    let mut out = Vec::new();
    loop {
        let (h, d) = rep(c);
        match h.reply_type {
            proto::REP_ACK => return Ok(out),
            proto::REP_META_CONTEXT => out.push(proto::decode_rep_meta_context(&d).unwrap()),
            other => return Err(other),
        }
    }
}

#[test]
fn meta_context_options() {
    let (mut c, t) = begin_agreed(FLAGS);
    let list = |c: &mut UnixStream, export: &str, q: &[&str]| {
        opt(c, proto::OPT_LIST_META_CONTEXT, &proto::encode_meta_context_request(export, q));
        contexts(c)
    };
    let set = |c: &mut UnixStream, export: &str, q: &[&str]| {
        opt(c, proto::OPT_SET_META_CONTEXT, &proto::encode_meta_context_request(export, q));
        contexts(c)
    };
    let bitmap = "qemu:dirty-bitmap:mem.dirty";
    // SET before STRUCTURED_REPLY is invalid; LIST is answered (ids reserved as 0).
    assert_eq!(set(&mut c, VOL, &["base:allocation"]), Err(proto::REP_ERR_INVALID));
    assert_eq!(list(&mut c, VOL, &[]), Ok(vec![(0, "base:allocation".into()), (0, bitmap.into())]));
    assert_eq!(list(&mut c, VOL, &["qemu:"]), Ok(vec![(0, bitmap.into())]));
    assert_eq!(list(&mut c, VOL, &["base:", "nbd-server:x"]), Ok(vec![(0, "base:allocation".into())]));
    assert_eq!(list(&mut c, "nope", &[]), Err(proto::REP_ERR_UNKNOWN));
    assert_eq!(list(&mut c, VOL, &["no-colon"]), Err(proto::REP_ERR_INVALID));
    // Malformed payloads: a count the option cannot hold, a query running past the end.
    let mut bad = proto::encode_meta_context_request(VOL, &[]);
    bad.truncate(bad.len() - 4);
    bad.extend_from_slice(&1000u32.to_be_bytes());
    opt(&mut c, proto::OPT_LIST_META_CONTEXT, &bad);
    assert_eq!(contexts(&mut c), Err(proto::REP_ERR_INVALID));
    let mut bad = proto::encode_meta_context_request(VOL, &["base:allocation"]);
    bad.pop();
    opt(&mut c, proto::OPT_LIST_META_CONTEXT, &bad);
    assert_eq!(contexts(&mut c), Err(proto::REP_ERR_INVALID));
    // STRUCTURED_REPLY takes no data.
    opt(&mut c, proto::OPT_STRUCTURED_REPLY, b"x");
    assert_eq!(rep(&mut c).0.reply_type, proto::REP_ERR_INVALID);
    opt(&mut c, proto::OPT_STRUCTURED_REPLY, &[]);
    assert_eq!(rep(&mut c).0.reply_type, proto::REP_ACK);
    // SET: exact names, wildcards ignored; a later SET replaces an earlier one, even a failed one.
    assert_eq!(set(&mut c, VOL, &["base:", bitmap]), Ok(vec![(2, bitmap.into())]));
    assert_eq!(set(&mut c, VOL, &["bad"]), Err(proto::REP_ERR_INVALID));
    opt(&mut c, proto::OPT_EXPORT_NAME, VOL.as_bytes());
    c.read_exact(&mut [0u8; 10]).unwrap();
    assert_eq!(t.join().unwrap().unwrap(), Some((true, vec![])));

    // EXPORT_NAME keeps what SET chose for the same export.
    let (mut c, t) = begin_agreed(FLAGS);
    opt(&mut c, proto::OPT_STRUCTURED_REPLY, &[]);
    rep(&mut c);
    assert_eq!(set(&mut c, VOL, &["base:allocation", bitmap]).unwrap().len(), 2);
    opt(&mut c, proto::OPT_EXPORT_NAME, VOL.as_bytes());
    c.read_exact(&mut [0u8; 10]).unwrap();
    assert_eq!(t.join().unwrap().unwrap(), Some((true, vec!["base:allocation".into(), bitmap.into()])));
}

#[test]
fn refuses_client_without_fixed_newstyle_or_with_unknown_flags() {
    for flags in [0, proto::FLAG_C_NO_ZEROES, FLAGS | 0x100] {
        let (mut c, t) = begin(flags);
        assert!(t.join().unwrap().is_err());
        assert!(closed(&mut c));
    }
}

#[test]
fn info_unknown_then_name_then_abort() {
    let (mut c, t) = begin(FLAGS);
    opt(&mut c, proto::OPT_INFO, &proto::encode_info_request("nope", &[]));
    let (h, msg) = rep(&mut c);
    assert_eq!(h.reply_type, proto::REP_ERR_UNKNOWN);
    assert!(String::from_utf8(msg).unwrap().contains("nope"));
    opt(&mut c, proto::OPT_INFO, &proto::encode_info_request(RO, &[proto::INFO_NAME]));
    let (_, d) = rep(&mut c);
    let ro_flags = BASE_TFLAGS | proto::TFLAG_READ_ONLY;
    assert_eq!(proto::decode_info(&d), Ok(proto::Info::Export { size: 4096, tflags: ro_flags }));
    rep(&mut c); // block size
    assert_eq!(proto::decode_info(&rep(&mut c).1), Ok(proto::Info::Name(RO.into())));
    assert_eq!(rep(&mut c).0.reply_type, proto::REP_ACK);
    // Malformed GO payload: error reply, session goes on.
    opt(&mut c, proto::OPT_GO, &[0, 0, 0, 9, b'x']);
    assert_eq!(rep(&mut c).0.reply_type, proto::REP_ERR_INVALID);
    opt(&mut c, proto::OPT_ABORT, &[]);
    assert_eq!(rep(&mut c).0.reply_type, proto::REP_ACK);
    assert_eq!(t.join().unwrap().unwrap(), None);
}

#[test]
fn list_and_default_name() {
    let (mut c, t) = begin(FLAGS);
    opt(&mut c, proto::OPT_LIST, b"junk");
    assert_eq!(rep(&mut c).0.reply_type, proto::REP_ERR_INVALID);
    opt(&mut c, proto::OPT_LIST, &[]);
    let mut names = Vec::new();
    loop {
        let (h, d) = rep(&mut c);
        if h.reply_type == proto::REP_ACK {
            break;
        }
        assert_eq!(h.reply_type, proto::REP_SERVER);
        names.push(proto::decode_rep_server(&d).unwrap());
    }
    assert_eq!(names, vec![VOL.to_string(), RO.to_string()]);
    // Two exports: the default name is unknown.
    opt(&mut c, proto::OPT_GO, &proto::encode_info_request("", &[]));
    assert_eq!(rep(&mut c).0.reply_type, proto::REP_ERR_UNKNOWN);
    opt(&mut c, proto::OPT_ABORT, &[]);
    rep(&mut c);
    assert!(t.join().unwrap().unwrap().is_none());
}

#[test]
fn oversize_options() {
    let (mut c, t) = begin(FLAGS);
    opt(&mut c, 0x77, &vec![1u8; 5000]);
    let (h, _) = rep(&mut c);
    assert_eq!((h.option, h.reply_type), (0x77, proto::REP_ERR_INVALID));
    // Still in frame.
    opt(&mut c, proto::OPT_LIST, &[]);
    while rep(&mut c).0.reply_type != proto::REP_ACK {}
    // Beyond the discard limit: disconnect without reading the payload.
    c.write_all(&proto::encode_option_header(proto::OPT_GO, DISCARD_LIMIT + 1)).unwrap();
    assert!(t.join().unwrap().is_err());
    assert!(closed(&mut c));
    // EXPORT_NAME cannot be answered with an error: oversize closes at once.
    let (mut c, t) = begin(FLAGS);
    c.write_all(&proto::encode_option_header(proto::OPT_EXPORT_NAME, 5000)).unwrap();
    assert!(t.join().unwrap().is_err());
    assert!(closed(&mut c));
}

#[test]
fn export_name_zeroes_and_unknown() {
    let (mut c, t) = begin(FLAGS);
    opt(&mut c, proto::OPT_EXPORT_NAME, VOL.as_bytes());
    let mut b = [0u8; 10];
    c.read_exact(&mut b).unwrap();
    assert_eq!(u64::from_be_bytes(b[..8].try_into().unwrap()), 1 << 20);
    assert_eq!(u16::from_be_bytes([b[8], b[9]]), BASE_TFLAGS);
    assert!(t.join().unwrap().unwrap().is_some());
    drop(c);

    let (mut c, t) = begin(proto::FLAG_C_FIXED_NEWSTYLE);
    opt(&mut c, proto::OPT_EXPORT_NAME, RO.as_bytes());
    let mut b = [0u8; 134];
    c.read_exact(&mut b).unwrap();
    assert!(b[10..].iter().all(|&z| z == 0));
    assert!(t.join().unwrap().unwrap().is_some());

    let (mut c, t) = begin(FLAGS);
    opt(&mut c, proto::OPT_EXPORT_NAME, b"missing");
    assert!(t.join().unwrap().is_err());
    assert!(closed(&mut c));
}

#[test]
fn bad_option_magic_and_eof() {
    let (mut c, t) = begin(FLAGS);
    c.write_all(&[0u8; 16]).unwrap();
    assert!(t.join().unwrap().is_err());
    assert!(closed(&mut c));
    let (c, t) = begin(FLAGS);
    drop(c);
    assert!(t.join().unwrap().is_err());
}
