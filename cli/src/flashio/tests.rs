//! flashio commands against the engine's NBD server over a temp socket, with in-memory exports.

use super::*;
use flashtrack::nbd::{Export, ExportCatalog, Server};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

#[derive(Debug)]
struct Mem(Mutex<Vec<u8>>);

impl Export for Mem {
    fn size(&self) -> u64 {
        self.0.lock().unwrap().len() as u64
    }
    fn block_size(&self) -> u32 {
        512
    }
    fn read(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let o = offset as usize;
        buf.copy_from_slice(&self.0.lock().unwrap()[o..o + buf.len()]);
        Ok(())
    }
    fn write(&self, offset: u64, data: &[u8], _fua: bool) -> io::Result<()> {
        let o = offset as usize;
        self.0.lock().unwrap()[o..o + data.len()].copy_from_slice(data);
        Ok(())
    }
    fn flush(&self) -> io::Result<()> {
        Ok(())
    }
    fn trim(&self, offset: u64, len: u64) -> io::Result<()> {
        self.write_zeroes(offset, len, true)
    }
    fn write_zeroes(&self, offset: u64, len: u64, _may_trim: bool) -> io::Result<()> {
        let o = offset as usize;
        self.0.lock().unwrap()[o..o + len as usize].fill(0);
        Ok(())
    }
}

#[derive(Debug)]
struct Cat(BTreeMap<String, Arc<Mem>>);

impl ExportCatalog for Cat {
    fn open(&self, name: &str) -> Option<Arc<dyn Export>> {
        Some(self.0.get(name)?.clone())
    }
    fn list(&self) -> Vec<String> {
        self.0.keys().cloned().collect()
    }
}

const A: &str = "IBM.2107-75FA120/1000";
const B: &str = "IBM.2107-75FA120/1001";

fn setup() -> (tempfile::TempDir, Arc<Cat>, flashtrack::nbd::ServerHandle, String) {
    let dir = tempfile::tempdir().unwrap();
    // 1 MiB + 1000 bytes: the last track is partial.
    let size = (1 << 20) + 1000;
    let cat = Arc::new(Cat([A, B].iter().map(|n| (n.to_string(), Arc::new(Mem(Mutex::new(vec![0; size]))))).collect()));
    let sock = dir.path().join("nbd.sock");
    let h = Server::default().serve_unix(&sock, cat.clone()).unwrap();
    (dir, cat, h, sock.display().to_string())
}

fn go(args: &[&str]) -> Result<bool> {
    run(Cli::try_parse_from(std::iter::once("flashio").chain(args.iter().copied())).unwrap())
}

#[test]
fn sizes_and_bytes_parse() {
    assert_eq!(parse_size("0"), Ok(0));
    assert_eq!(parse_size("4K"), Ok(4096));
    assert_eq!(parse_size("1m"), Ok(1 << 20));
    assert_eq!(parse_size("2GiB"), Ok(2 << 30));
    assert_eq!(parse_size("1T"), Ok(1 << 40));
    assert!(parse_size("1X").is_err() && parse_size("").is_err() && parse_size("K").is_err());
    assert!(parse_size("99999999999T").is_err());
    assert_eq!(parse_byte("0xAB"), Ok(0xab));
    assert_eq!(parse_byte("171"), Ok(171));
    assert!(parse_byte("0x100").is_err() && parse_byte("-1").is_err());
}

#[test]
fn write_checksum_compare_dirty() {
    let (dir, cat, h, s) = setup();
    let s = s.as_str();
    assert!(
        go(&[
            "--socket",
            s,
            "--io-size",
            "4K",
            "write",
            A,
            "--offset",
            "1K",
            "--length",
            "100K",
            "--random",
            "--seed",
            "9"
        ])
        .unwrap()
    );
    assert!(go(&["--socket", s, "write", B, "--offset", "1K", "--length", "100K", "--random", "--seed", "9"]).unwrap());
    // Same seed and offsets, different request sizes: same bytes.
    assert!(go(&["--socket", s, "compare", A, B]).unwrap());
    let a = cat.0[A].0.lock().unwrap().clone();
    assert!(a[..1024].iter().all(|&b| b == 0) && a[1024..2048].iter().any(|&b| b != 0));
    assert!(go(&["--socket", s, "write", B, "--offset", "5000", "--length", "1", "--pattern", "0x01"]).unwrap());
    assert!(!go(&["--socket", s, "compare", A, B]).unwrap(), "a one-byte difference is found");
    // read --output equals the export's bytes.
    let out = dir.path().join("out");
    let o = out.to_str().unwrap();
    assert!(
        go(&["--socket", s, "--io-size", "3000", "read", A, "--offset", "100", "--length", "200K", "-o", o]).unwrap()
    );
    assert_eq!(std::fs::read(&out).unwrap(), a[100..100 + (200 << 10)]);
    assert!(go(&["--socket", s, "checksum", A]).unwrap());
    // Errors: unknown export, range past the end, bad fraction.
    assert!(go(&["--socket", s, "checksum", "nope"]).is_err());
    assert!(go(&["--socket", s, "write", A, "--offset", "1M", "--length", "2K", "--pattern", "1"]).is_err());
    assert!(go(&["--socket", s, "dirty", A, "--fraction", "1.5", "--seed", "1"]).is_err());
    // dirty: exactly round(fraction * tracks) whole tracks, the partial last one included.
    let list = dir.path().join("tracks");
    let l = list.to_str().unwrap();
    assert!(
        go(&["--socket", s, "dirty", B, "--fraction", "1", "--seed", "3", "--pattern", "0xee", "--list", l]).unwrap()
    );
    let tracks: Vec<u64> = std::fs::read_to_string(&list).unwrap().lines().map(|t| t.parse().unwrap()).collect();
    assert_eq!(tracks, (0..17).collect::<Vec<u64>>());
    assert!(cat.0[B].0.lock().unwrap().iter().all(|&b| b == 0xee));
    assert!(go(&["--socket", s, "dirty", A, "--fraction", "0.5", "--seed", "3", "--list", l]).unwrap());
    assert_eq!(std::fs::read_to_string(&list).unwrap().lines().count(), 9); // round(8.5)
    assert!(go(&["--socket", s, "list"]).unwrap());
    h.shutdown();
}

#[test]
fn needs_an_endpoint() {
    let err = go(&["list"]).unwrap_err();
    assert!(err.to_string().contains("--socket"));
    assert!(Cli::try_parse_from(["flashio", "--socket", "a", "--tcp", "b:1", "list"]).is_err());
}
