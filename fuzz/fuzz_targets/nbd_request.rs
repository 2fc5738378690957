//! Every NBD decoder a client's bytes reach, fed arbitrary input: none may panic, and what
//! decodes must encode back to the same bytes (so a decoder cannot silently drop input).

#![no_main]

use flashtrack::nbd::proto;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Transmission: the 28-byte request header.
    if let Ok(h) = proto::decode_request(data) {
        assert_eq!(&proto::encode_request(&h)[..], &data[..proto::REQUEST_LEN]);
    }
    // Handshake: option header and the payloads of INFO/GO and the meta-context options.
    if let Ok(h) = proto::decode_option_header(data) {
        assert_eq!(&proto::encode_option_header(h.option, h.length)[..], &data[..proto::OPTION_HEADER_LEN]);
    }
    if let Ok(r) = proto::decode_info_request(data) {
        assert_eq!(proto::encode_info_request(&r.name, &r.requests), data);
    }
    if let Ok(r) = proto::decode_meta_context_request(data) {
        let queries: Vec<&str> = r.queries.iter().map(String::as_str).collect();
        assert_eq!(proto::encode_meta_context_request(&r.export, &queries), data);
    }
    // Client side: replies a server could send.
    let _ = proto::decode_simple_reply(data);
    let _ = proto::decode_chunk_header(data);
    let _ = proto::decode_chunk_error(data);
    if let Ok((ctx, d)) = proto::decode_block_status(data) {
        let mut out = Vec::new();
        proto::encode_chunk_block_status(&mut out, 0, 0, ctx, &d).expect("non-empty");
        assert_eq!(&out[proto::CHUNK_HEADER_LEN..], data);
    }
    let _ = proto::decode_info(data);
    let _ = proto::decode_rep_server(data);
    let _ = proto::decode_rep_meta_context(data);
});
