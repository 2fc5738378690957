//! The whole server-side handshake driven by arbitrary client bytes: it must end (Ok or
//! Err) without panicking, whatever options, lengths and queries arrive.

#![no_main]

use flashtrack::nbd::handshake::negotiate;
use flashtrack::nbd::{Export, ExportCatalog};
use libfuzzer_sys::fuzz_target;
use std::io::{self, Read, Write};
use std::sync::Arc;

/// A 1 MiB export that offers one dirty bitmap, so every context rule is reachable.
struct Fake;

impl Export for Fake {
    fn size(&self) -> u64 {
        1 << 20
    }
    fn block_size(&self) -> u32 {
        512
    }
    fn read(&self, _: u64, buf: &mut [u8]) -> io::Result<()> {
        buf.fill(0);
        Ok(())
    }
    fn write(&self, _: u64, _: &[u8], _: bool) -> io::Result<()> {
        Ok(())
    }
    fn flush(&self) -> io::Result<()> {
        Ok(())
    }
    fn trim(&self, _: u64, _: u64) -> io::Result<()> {
        Ok(())
    }
    fn write_zeroes(&self, _: u64, _: u64, _: bool) -> io::Result<()> {
        Ok(())
    }
    fn dirty_bitmaps(&self) -> Vec<String> {
        vec!["1000-1001.src".into()]
    }
}

struct Catalog;

impl ExportCatalog for Catalog {
    fn open(&self, name: &str) -> Option<Arc<dyn Export>> {
        (name == "IBM.2107-75FA120/1000").then(|| Arc::new(Fake) as Arc<dyn Export>)
    }
    fn list(&self) -> Vec<String> {
        vec!["IBM.2107-75FA120/1000".into()]
    }
}

/// Client bytes in, server bytes discarded; EOF ends the handshake with an error.
struct Stream<'a>(&'a [u8]);

impl Read for Stream<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf)
    }
}

impl Write for Stream<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fuzz_target!(|data: &[u8]| {
    let _ = negotiate(&mut Stream(data), &Catalog);
});
