//! Unit tests of the pure codec: round trips, exact bytes, malformed input.

use super::*;

#[test]
fn greeting_bytes_and_round_trip() {
    let g = encode_greeting(FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES);
    assert_eq!(&g[..8], b"NBDMAGIC");
    assert_eq!(&g[8..16], b"IHAVEOPT");
    assert_eq!(&g[16..], &[0, 3]);
    assert_eq!(decode_greeting(&g), Ok(3));
}

#[test]
fn greeting_malformed() {
    let g = encode_greeting(1);
    assert_eq!(decode_greeting(&g[..17]), Err(DecodeError::Short { need: 18, got: 17 }));
    let mut old = g;
    old[8..16].copy_from_slice(&0x0000_4202_8186_1253_u64.to_be_bytes());
    assert!(matches!(decode_greeting(&old), Err(DecodeError::BadMagic { .. })));
    let mut bad = g;
    bad[0] = b'X';
    assert!(matches!(decode_greeting(&bad), Err(DecodeError::BadMagic { .. })));
}

#[test]
fn option_header_round_trip_and_errors() {
    let h = encode_option_header(OPT_GO, 42);
    assert_eq!(&h[..8], b"IHAVEOPT");
    assert_eq!(decode_option_header(&h), Ok(OptionHeader { option: OPT_GO, length: 42 }));
    assert!(matches!(decode_option_header(&h[..15]), Err(DecodeError::Short { need: 16, .. })));
    let mut bad = h;
    bad[3] ^= 1;
    assert!(matches!(decode_option_header(&bad), Err(DecodeError::BadMagic { .. })));
}

#[test]
fn option_reply_round_trip() {
    let mut out = Vec::new();
    encode_option_reply(&mut out, OPT_LIST, REP_SERVER, b"abc");
    assert_eq!(out.len(), OPTION_REPLY_HEADER_LEN + 3);
    assert_eq!(&out[..8], &[0, 3, 0xe8, 0x89, 0x04, 0x55, 0x65, 0xa9]);
    let h = decode_option_reply_header(&out).unwrap();
    assert_eq!(h, OptionReplyHeader { option: OPT_LIST, reply_type: REP_SERVER, length: 3 });
    assert_eq!(&out[20..], b"abc");
    assert!(decode_option_reply_header(&out[..19]).is_err());
    out[0] = 1;
    assert!(matches!(decode_option_reply_header(&out), Err(DecodeError::BadMagic { .. })));
}

#[test]
fn rep_err_values() {
    assert_eq!(REP_ERR_UNSUP, 0x8000_0001);
    assert_eq!(REP_ERR_UNKNOWN, 0x8000_0006);
    assert!(is_rep_err(REP_ERR_INVALID));
    assert!(!is_rep_err(REP_ACK));
    assert!(!is_rep_err(REP_INFO));
}

#[test]
fn export_name_reply_zeroes() {
    let r = encode_export_name_reply(1 << 30, 0x1234, false);
    assert_eq!(r.len(), 134);
    assert_eq!(&r[..8], &(1u64 << 30).to_be_bytes());
    assert_eq!(&r[8..10], &[0x12, 0x34]);
    assert!(r[10..].iter().all(|&b| b == 0));
    assert_eq!(encode_export_name_reply(7, 1, true).len(), 10);
}

#[test]
fn info_request_round_trip() {
    let b = encode_info_request("IBM.2107-75FA120/1000", &[INFO_BLOCK_SIZE, INFO_NAME]);
    let r = decode_info_request(&b).unwrap();
    assert_eq!(r.name, "IBM.2107-75FA120/1000");
    assert_eq!(r.requests, vec![INFO_BLOCK_SIZE, INFO_NAME]);
    let empty = decode_info_request(&encode_info_request("", &[])).unwrap();
    assert_eq!(empty, InfoRequest { name: String::new(), requests: vec![] });
}

#[test]
fn info_request_malformed() {
    let b = encode_info_request("vol", &[3]);
    // Truncated anywhere: error, never a panic.
    for n in 0..b.len() {
        assert!(decode_info_request(&b[..n]).is_err(), "prefix {n}");
    }
    let mut trailing = b.clone();
    trailing.push(0);
    assert_eq!(decode_info_request(&trailing), Err(DecodeError::Malformed("trailing bytes after info requests")));
    // Name length far beyond the data.
    let mut huge = b.clone();
    huge[..4].copy_from_slice(&u32::MAX.to_be_bytes());
    assert!(decode_info_request(&huge).is_err());
    // Count of requests larger than present.
    let mut many = encode_info_request("v", &[]);
    let n = many.len();
    many[n - 2..].copy_from_slice(&1000u16.to_be_bytes());
    assert!(matches!(decode_info_request(&many), Err(DecodeError::Short { .. })));
    // Not UTF-8.
    let mut bad = encode_info_request("ab", &[]);
    bad[4] = 0xff;
    assert!(matches!(decode_info_request(&bad), Err(DecodeError::Malformed(_))));
}

#[test]
fn info_replies_round_trip() {
    let e = encode_info_export(1 << 40, TFLAG_HAS_FLAGS | TFLAG_SEND_FLUSH);
    assert_eq!(e.len(), 12);
    assert_eq!(decode_info(&e), Ok(Info::Export { size: 1 << 40, tflags: 5 }));
    let bs = encode_info_block_size(512, PREFERRED_BLOCK_SIZE, MAX_PAYLOAD);
    assert_eq!(bs.len(), 14);
    assert_eq!(decode_info(&bs), Ok(Info::BlockSize { min: 512, preferred: 64 << 10, max: 32 << 20 }));
    let n = encode_info_name("a/b");
    assert_eq!(decode_info(&n), Ok(Info::Name("a/b".into())));
    assert_eq!(decode_info(&[0, 2, 1, 2]), Ok(Info::Other(INFO_DESCRIPTION)));
    assert!(decode_info(&e[..11]).is_err());
    assert!(decode_info(&[0]).is_err());
    let mut long = e.clone();
    long.push(9);
    assert!(decode_info(&long).is_err());
}

#[test]
fn rep_server_round_trip() {
    let b = encode_rep_server("IBM.2107-75FA120/1000");
    assert_eq!(decode_rep_server(&b).unwrap(), "IBM.2107-75FA120/1000");
    let mut with_desc = b.clone();
    with_desc.extend_from_slice(b"description");
    assert_eq!(decode_rep_server(&with_desc).unwrap(), "IBM.2107-75FA120/1000");
    assert!(decode_rep_server(&b[..b.len() - 1]).is_err());
    assert!(decode_rep_server(&[0, 0]).is_err());
}

#[test]
fn request_round_trip_exact_bytes() {
    let h = RequestHeader {
        flags: CMD_FLAG_FUA,
        command: CMD_WRITE,
        cookie: 0x0102_0304_0506_0708,
        offset: 4096,
        length: 512,
    };
    let b = encode_request(&h);
    assert_eq!(&b[..4], &[0x25, 0x60, 0x95, 0x13]);
    assert_eq!(&b[4..8], &[0, 1, 0, 1]);
    assert_eq!(&b[8..16], &[1, 2, 3, 4, 5, 6, 7, 8]);
    assert_eq!(decode_request(&b), Ok(h));
}

#[test]
fn request_malformed() {
    let b = encode_request(&RequestHeader { flags: 0, command: CMD_READ, cookie: 1, offset: 0, length: 1 });
    for n in 0..REQUEST_LEN {
        assert_eq!(decode_request(&b[..n]), Err(DecodeError::Short { need: REQUEST_LEN, got: n }));
    }
    let mut bad = b;
    bad[0] = 0;
    assert_eq!(decode_request(&bad), Err(DecodeError::BadMagic { got: 0x0060_9513 }));
    // An extended-header magic is out of frame too.
    bad[..4].copy_from_slice(&0x21e4_1c71u32.to_be_bytes());
    assert!(matches!(decode_request(&bad), Err(DecodeError::BadMagic { .. })));
}

#[test]
fn simple_reply_round_trip() {
    let b = encode_simple_reply(EINVAL, 99);
    assert_eq!(&b[..4], &[0x67, 0x44, 0x66, 0x98]);
    assert_eq!(decode_simple_reply(&b), Ok(SimpleReply { error: 22, cookie: 99 }));
    assert!(matches!(decode_simple_reply(&b[..15]), Err(DecodeError::Short { .. })));
    let mut bad = b;
    bad[1] = 0;
    assert!(matches!(decode_simple_reply(&bad), Err(DecodeError::BadMagic { .. })));
}

#[test]
fn structured_chunks() {
    let h = encode_chunk_header(REPLY_FLAG_DONE, REPLY_TYPE_NONE, 5, 0);
    assert_eq!(&h[..4], &[0x66, 0x8e, 0x33, 0xef]);
    assert_eq!(h, encode_chunk_none(5));
    let d = encode_chunk_offset_data(0, 7, 1 << 20, 4096).unwrap();
    assert_eq!(&d[6..8], &REPLY_TYPE_OFFSET_DATA.to_be_bytes());
    assert_eq!(&d[16..20], &4104u32.to_be_bytes());
    assert_eq!(&d[20..], &(1u64 << 20).to_be_bytes());
    assert!(encode_chunk_offset_data(0, 7, 0, u32::MAX - 7).is_none());
    let e = encode_chunk_error(9, EIO, "bad");
    assert_eq!(e.len(), 20 + 6 + 3);
    assert_eq!(&e[4..6], &REPLY_FLAG_DONE.to_be_bytes());
    assert_eq!(&e[6..8], &[0x80, 0x01]);
    assert_eq!(&e[16..20], &9u32.to_be_bytes());
    assert_eq!(&e[20..24], &5u32.to_be_bytes());
    assert_eq!(&e[24..26], &3u16.to_be_bytes());
    // Over-long messages are cut at a char boundary, never panic.
    let long = "é".repeat(40_000);
    let e = encode_chunk_error(1, EIO, &long);
    let msg_len = u16::from_be_bytes([e[24], e[25]]) as usize;
    assert!(msg_len <= 65529 && std::str::from_utf8(&e[26..]).is_ok());
}

#[test]
fn errno_mapping() {
    let os = |c| errno_from_io(&io::Error::from_raw_os_error(c));
    assert_eq!(os(libc::EPERM), EPERM);
    assert_eq!(os(libc::EROFS), EPERM);
    assert_eq!(os(libc::EIO), EIO);
    assert_eq!(os(libc::ENOSPC), ENOSPC);
    assert_eq!(os(libc::EDQUOT), ENOSPC);
    assert_eq!(os(libc::EINVAL), EINVAL);
    assert_eq!(os(libc::ENOENT), EIO);
    assert_eq!(os(libc::EOPNOTSUPP), ENOTSUP);
    let kind = |k| errno_from_io(&io::Error::from(k));
    assert_eq!(kind(io::ErrorKind::PermissionDenied), EPERM);
    assert_eq!(kind(io::ErrorKind::InvalidInput), EINVAL);
    assert_eq!(kind(io::ErrorKind::StorageFull), ENOSPC);
    assert_eq!(kind(io::ErrorKind::Other), EIO);
    assert_eq!(io_from_errno(EPERM).raw_os_error(), Some(1));
    assert_eq!(io_from_errno(u32::MAX).raw_os_error(), None);
}

#[test]
fn meta_context_request_round_trip_and_malformed() {
    let b = encode_meta_context_request("vol", &["base:allocation", "qemu:dirty-bitmap:1000-1001.src"]);
    let r = decode_meta_context_request(&b).unwrap();
    assert_eq!(r.export, "vol");
    assert_eq!(r.queries, vec!["base:allocation", "qemu:dirty-bitmap:1000-1001.src"]);
    assert_eq!(decode_meta_context_request(&encode_meta_context_request("", &[])).unwrap().queries.len(), 0);
    // Every truncation is an error, never a panic.
    for n in 0..b.len() {
        assert!(decode_meta_context_request(&b[..n]).is_err(), "prefix {n}");
    }
    let mut trailing = b.clone();
    trailing.push(0);
    assert!(decode_meta_context_request(&trailing).is_err());
    // A huge query count is refused before any allocation.
    let mut huge = encode_meta_context_request("v", &[]);
    let at = huge.len() - 4;
    huge[at..].copy_from_slice(&u32::MAX.to_be_bytes());
    assert_eq!(decode_meta_context_request(&huge), Err(DecodeError::Malformed("more queries than the option holds")));
    let mut bad_utf8 = encode_meta_context_request("v", &["ab"]);
    let last = bad_utf8.len() - 1;
    bad_utf8[last] = 0xff;
    assert!(decode_meta_context_request(&bad_utf8).is_err());
    let long = "q".repeat(MAX_STRING_LEN + 1);
    assert!(decode_meta_context_request(&encode_meta_context_request(&long, &[])).is_err());
    assert!(decode_meta_context_request(&encode_meta_context_request("v", &[long.as_str()])).is_err());
}

#[test]
fn meta_context_reply_round_trip() {
    let b = encode_rep_meta_context(7, "base:allocation");
    assert_eq!(&b[..4], &[0, 0, 0, 7]);
    assert_eq!(decode_rep_meta_context(&b), Ok((7, "base:allocation".into())));
    assert!(decode_rep_meta_context(&b[..3]).is_err());
}

#[test]
fn block_status_chunk_bytes_and_round_trip() {
    let mut out = Vec::new();
    encode_chunk_block_status(&mut out, 0, 9, 2, &[(65536, STATE_HOLE | STATE_ZERO), (512, 0)]).unwrap();
    assert_eq!(out.len(), CHUNK_HEADER_LEN + 4 + 16);
    let h = decode_chunk_header(&out).unwrap();
    assert_eq!(h, ChunkHeader { flags: 0, ty: REPLY_TYPE_BLOCK_STATUS, cookie: 9, length: 20 });
    let (ctx, d) = decode_block_status(&out[CHUNK_HEADER_LEN..]).unwrap();
    assert_eq!((ctx, d), (2, vec![(65536, 3), (512, 0)]));
    assert!(encode_chunk_block_status(&mut out, 0, 9, 2, &[]).is_none());
    // Payloads that are not whole descriptors, or hold a zero length, are malformed.
    assert!(decode_block_status(&[0, 0, 0, 1]).is_err());
    assert!(decode_block_status(&[0, 0, 0, 1, 0, 0, 0, 8, 0]).is_err());
    assert!(decode_block_status(&[0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1]).is_err());
    let mut bad = out.clone();
    bad[0] ^= 1;
    assert!(matches!(decode_chunk_header(&bad), Err(DecodeError::BadMagic { .. })));
    assert!(decode_chunk_header(&out[..CHUNK_HEADER_LEN - 1]).is_err());
}

#[test]
fn error_chunk_round_trip() {
    let b = encode_chunk_error(3, EINVAL, "range past the end");
    assert_eq!(reply_magic(&b), Ok(STRUCTURED_REPLY_MAGIC));
    let (e, msg) = decode_chunk_error(&b[CHUNK_HEADER_LEN..]).unwrap();
    assert_eq!((e, msg.as_str()), (EINVAL, "range past the end"));
    assert!(decode_chunk_error(&b[CHUNK_HEADER_LEN..CHUNK_HEADER_LEN + 8]).is_err());
}
