//! Handshake tests over the in-memory transport: success, wrong keys, replays, bad input.

use super::*;
use crate::link::transport::{MemStream, mem_pair, read_frame};
use std::thread;

const A: LinkAddr = LinkAddr { wwnn: 0x5005_0763_0000_0001, port: 0x0000 };
const B: LinkAddr = LinkAddr { wwnn: 0x5005_0763_0000_0002, port: 0x0101 };

fn key(b: u8) -> SiteKey {
    SiteKey::new(vec![b; 32]).unwrap()
}

/// Runs a real server on one end of a pipe; returns the other end and the server's outcome.
fn serve(k: SiteKey, nonces: Arc<NonceMemory>) -> (MemStream, thread::JoinHandle<Result<Peer>>) {
    let (c, mut s) = mem_pair();
    let h = thread::spawn(move || server(&mut s, &k, B, 22, &nonces, &"test client"));
    (c, h)
}

use std::sync::Arc;

fn raw_send(s: &mut MemStream, kind: FrameType, payload: &[u8]) {
    transport::write_bytes(s, &frame::encode(kind, 0, payload), &"raw").unwrap();
}

fn hello(nonce: [u8; NONCE_LEN]) -> Vec<u8> {
    let mut h = 11u64.to_be_bytes().to_vec();
    put_addr(&mut h, A);
    put_addr(&mut h, B);
    h.extend_from_slice(&nonce);
    h
}

/// Splits a Challenge payload into (incarnation, nonce, proof).
fn split_challenge(p: &[u8]) -> (u64, [u8; NONCE_LEN], Vec<u8>) {
    let mut f = Fields::new(p);
    (f.u64().unwrap(), f.array().unwrap(), f.rest().to_vec())
}

#[test]
fn same_key_authenticates_both_ways() {
    let (mut c, h) = serve(key(7), Arc::default());
    let peer = client(&mut c, &key(7), A, 11, B).unwrap();
    assert_eq!(peer, Peer { addr: B, incarnation: 22 });
    assert_eq!(h.join().unwrap().unwrap(), Peer { addr: A, incarnation: 11 });
}

#[test]
fn wrong_key_refused_at_both_ends() {
    let (mut c, h) = serve(key(7), Arc::default());
    let e = client(&mut c, &key(8), A, 11, B).unwrap_err();
    assert_eq!(e.kind, ErrorKind::LinkAuthFailed, "{e}");
    let e = h.join().unwrap().unwrap_err();
    assert_eq!(e.kind, ErrorKind::LinkAuthFailed, "{e}");
}

#[test]
fn server_refuses_a_client_proof_made_with_another_key() {
    // A client that skips checking the server and answers with the wrong key.
    let (mut c, h) = serve(key(7), Arc::default());
    let nonce_c = [3u8; NONCE_LEN];
    raw_send(&mut c, FrameType::Hello, &hello(nonce_c));
    let ch = read_frame(&mut c, &"raw").unwrap();
    let (inc_s, nonce_s, _) = split_challenge(&ch.payload);
    let t = Transcript { client: A, server: B, inc_c: 11, inc_s, nonce_c, nonce_s };
    raw_send(&mut c, FrameType::Response, &t.proof(&key(9), b"client"));
    let e = h.join().unwrap().unwrap_err();
    assert_eq!(e.kind, ErrorKind::LinkAuthFailed);
    let refused = read_frame(&mut c, &"raw").unwrap();
    assert_eq!((refused.kind, refused.payload[0]), (FrameType::Refused, REFUSED_KEY));
}

#[test]
fn replayed_hello_refused() {
    let nonces = Arc::new(NonceMemory::default());
    let (mut c1, h1) = serve(key(7), nonces.clone());
    raw_send(&mut c1, FrameType::Hello, &hello([5; NONCE_LEN]));
    let _ = read_frame(&mut c1, &"raw").unwrap();
    c1.shutdown();
    let _ = h1.join().unwrap();
    // The same Hello again, on a new connection to the same endpoint.
    let (mut c2, h2) = serve(key(7), nonces);
    raw_send(&mut c2, FrameType::Hello, &hello([5; NONCE_LEN]));
    assert_eq!(h2.join().unwrap().unwrap_err().kind, ErrorKind::LinkAuthFailed);
    let refused = read_frame(&mut c2, &"raw").unwrap();
    assert_eq!((refused.kind, refused.payload[0]), (FrameType::Refused, REFUSED_REPLAY));
}

#[test]
fn replayed_challenge_refused_by_the_client() {
    // Record a genuine server's Challenge to one Hello...
    let (mut c1, h1) = serve(key(7), Arc::default());
    raw_send(&mut c1, FrameType::Hello, &hello([1; NONCE_LEN]));
    let recorded = read_frame(&mut c1, &"raw").unwrap();
    c1.shutdown();
    let _ = h1.join().unwrap();
    // ...and play it to a genuine client as an impostor server: its nonce differs, so the
    // proof does not verify, although it was made with the right key.
    let (mut c, mut impostor) = mem_pair();
    let h = thread::spawn(move || {
        let _ = read_frame(&mut impostor, &"impostor").unwrap();
        raw_send(&mut impostor, FrameType::Challenge, &recorded.payload);
        read_frame(&mut impostor, &"impostor")
    });
    assert_eq!(client(&mut c, &key(7), A, 11, B).unwrap_err().kind, ErrorKind::LinkAuthFailed);
    let answer = h.join().unwrap().unwrap();
    assert_eq!(answer.kind, FrameType::Refused, "the client must not send its proof to an impostor");
}

#[test]
fn replayed_response_refused_by_the_server() {
    // Record a genuine client's Response, given by a scripted server that knows the key.
    let (mut c, mut scripted) = mem_pair();
    let h = thread::spawn(move || client(&mut c, &key(7), A, 11, B));
    let hello_f = read_frame(&mut scripted, &"s").unwrap();
    let mut f = Fields::new(&hello_f.payload);
    let (inc_c, _, _, nonce_c) =
        (f.u64().unwrap(), get_addr(&mut f).unwrap(), get_addr(&mut f).unwrap(), f.array().unwrap());
    let t = Transcript { client: A, server: B, inc_c, inc_s: 22, nonce_c, nonce_s: [9; NONCE_LEN] };
    let mut ch = 22u64.to_be_bytes().to_vec();
    ch.extend_from_slice(&[9; NONCE_LEN]);
    ch.extend_from_slice(&t.proof(&key(7), b"server"));
    raw_send(&mut scripted, FrameType::Challenge, &ch);
    let recorded = read_frame(&mut scripted, &"s").unwrap();
    assert_eq!(recorded.kind, FrameType::Response);
    scripted.shutdown();
    let _ = h.join().unwrap();
    // Replay it to the real server in a fresh handshake: its own nonce differs.
    let (mut c2, h2) = serve(key(7), Arc::default());
    raw_send(&mut c2, FrameType::Hello, &hello([4; NONCE_LEN]));
    let _ = read_frame(&mut c2, &"raw").unwrap();
    raw_send(&mut c2, FrameType::Response, &recorded.payload);
    assert_eq!(h2.join().unwrap().unwrap_err().kind, ErrorKind::LinkAuthFailed);
}

#[test]
fn wrong_address_and_garbage_refused() {
    let (mut c, h) = serve(key(7), Arc::default());
    let e = client(&mut c, &key(7), A, 11, LinkAddr { wwnn: 1, port: 2 }).unwrap_err();
    assert_eq!(e.kind, ErrorKind::InvalidArgument);
    assert_eq!(h.join().unwrap().unwrap_err().kind, ErrorKind::InvalidArgument);

    // Data before authentication: refused, nothing else happens.
    let (mut c, h) = serve(key(7), Arc::default());
    raw_send(&mut c, FrameType::Request, b"\x05");
    assert_eq!(h.join().unwrap().unwrap_err().kind, ErrorKind::LinkProtocol);

    // A truncated Hello.
    let (mut c, h) = serve(key(7), Arc::default());
    raw_send(&mut c, FrameType::Hello, &hello([6; NONCE_LEN])[..20]);
    assert_eq!(h.join().unwrap().unwrap_err().kind, ErrorKind::LinkProtocol);

    // Not a frame at all.
    let (mut c, h) = serve(key(7), Arc::default());
    std::io::Write::write_all(&mut c, &[0u8; 64]).unwrap();
    assert_eq!(h.join().unwrap().unwrap_err().kind, ErrorKind::LinkProtocol);
}

#[test]
fn keys_are_checked_and_never_printed() {
    assert_eq!(SiteKey::new(vec![1; 15]).unwrap_err().kind, ErrorKind::InvalidArgument);
    let k = SiteKey::generate().unwrap();
    assert_eq!(k.as_bytes().len(), 32);
    assert_ne!(k, SiteKey::generate().unwrap());
    assert_eq!(format!("{k:?}"), "SiteKey(32 bytes)");
}
