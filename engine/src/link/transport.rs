//! Byte streams under the link: TCP on loopback between two flashd processes, and an in-memory
//! duplex pipe between two images of one flashd.
//!
//! Both carry the same encoded frames, so framing, authentication, the simulated line, request
//! IDs and deduplication run the same code whichever transport is used. The in-memory pipe is
//! bounded like a socket buffer: a writer blocks while the reader is behind.

use super::frame::{self, Frame, HEADER_LEN};
use crate::error::{Error, ErrorKind, Result};
use std::collections::VecDeque;
use std::fmt;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// A connected, bidirectional byte stream. Clones share the connection (one reader, one writer).
pub trait Stream: Read + Write + Send + Sync + fmt::Debug {
    fn try_clone_stream(&self) -> io::Result<Box<dyn Stream>>;
    /// Bounds each blocking read (`None`: wait forever); an expired read fails with
    /// `WouldBlock` or `TimedOut`.
    fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()>;
    /// Closes both directions for every clone: blocked reads return end of file.
    fn shutdown(&self);
}

impl Stream for TcpStream {
    fn try_clone_stream(&self) -> io::Result<Box<dyn Stream>> {
        Ok(Box::new(self.try_clone()?))
    }

    fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        TcpStream::set_read_timeout(self, timeout)
    }

    fn shutdown(&self) {
        let _ = TcpStream::shutdown(self, Shutdown::Both);
    }
}

/// Refuses anything but loopback: the link has a key but no encryption, and the issue limits
/// the TCP transport to 127.0.0.1 (and ::1).
pub fn check_loopback(addr: SocketAddr) -> Result<()> {
    if addr.ip().is_loopback() {
        Ok(())
    } else {
        Err(Error::new(ErrorKind::InvalidArgument, addr, "the mirror link runs on loopback addresses only"))
    }
}

/// Connects to a flashd's link listener on loopback.
pub fn connect_tcp(addr: SocketAddr, timeout: Duration) -> Result<TcpStream> {
    check_loopback(addr)?;
    let s = TcpStream::connect_timeout(&addr, timeout)
        .map_err(|e| Error::new(ErrorKind::LinkDown, addr, format!("cannot connect: {e}")))?;
    // Replies are small: they must not wait for Nagle.
    s.set_nodelay(true).map_err(|e| Error::io(addr, &e))?;
    Ok(s)
}

/// Bytes a pipe holds before its writer blocks (about a socket buffer).
const PIPE_CAPACITY: usize = 1 << 20;

#[derive(Debug, Default)]
struct PipeState {
    buf: VecDeque<u8>,
    closed: bool,
}

/// One direction of an in-memory stream.
#[derive(Debug, Default)]
struct Pipe {
    state: Mutex<PipeState>,
    cond: Condvar,
}

impl Pipe {
    fn lock(&self) -> MutexGuard<'_, PipeState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn close(&self) {
        self.lock().closed = true;
        self.cond.notify_all();
    }
}

/// One end of an in-memory duplex stream; see [`mem_pair`].
#[derive(Debug, Clone)]
pub struct MemStream {
    rx: Arc<Pipe>,
    tx: Arc<Pipe>,
    read_timeout: Arc<Mutex<Option<Duration>>>,
}

/// Two connected in-memory streams: what one writes the other reads.
pub fn mem_pair() -> (MemStream, MemStream) {
    let (a, b) = (Arc::new(Pipe::default()), Arc::new(Pipe::default()));
    let end = |rx: &Arc<Pipe>, tx: &Arc<Pipe>| MemStream {
        rx: rx.clone(),
        tx: tx.clone(),
        read_timeout: Arc::new(Mutex::new(None)),
    };
    (end(&a, &b), end(&b, &a))
}

impl Read for MemStream {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if out.is_empty() {
            return Ok(0);
        }
        let timeout = *self.read_timeout.lock().unwrap_or_else(|p| p.into_inner());
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut st = self.rx.lock();
        loop {
            if !st.buf.is_empty() {
                let n = out.len().min(st.buf.len());
                // Two slice copies, not a byte at a time (a 64 KiB track is one call).
                let (a, b) = st.buf.as_slices();
                let na = n.min(a.len());
                out[..na].copy_from_slice(&a[..na]);
                out[na..n].copy_from_slice(&b[..n - na]);
                st.buf.drain(..n);
                self.rx.cond.notify_all();
                return Ok(n);
            }
            if st.closed {
                return Ok(0);
            }
            st = match deadline {
                None => self.rx.cond.wait(st).unwrap_or_else(|p| p.into_inner()),
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Err(io::Error::new(io::ErrorKind::WouldBlock, "read timed out"));
                    }
                    self.rx.cond.wait_timeout(st, left).unwrap_or_else(|p| p.into_inner()).0
                }
            };
        }
    }
}

impl Write for MemStream {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if data.is_empty() {
            return Ok(0);
        }
        let mut st = self.tx.lock();
        loop {
            if st.closed {
                return Err(io::Error::new(io::ErrorKind::BrokenPipe, "in-memory link closed"));
            }
            let room = PIPE_CAPACITY.saturating_sub(st.buf.len());
            if room > 0 {
                let n = room.min(data.len());
                st.buf.extend(&data[..n]);
                self.tx.cond.notify_all();
                return Ok(n);
            }
            st = self.tx.cond.wait(st).unwrap_or_else(|p| p.into_inner());
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Stream for MemStream {
    fn try_clone_stream(&self) -> io::Result<Box<dyn Stream>> {
        Ok(Box::new(self.clone()))
    }

    fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        *self.read_timeout.lock().unwrap_or_else(|p| p.into_inner()) = timeout;
        Ok(())
    }

    fn shutdown(&self) {
        self.rx.close();
        self.tx.close();
    }
}

/// Reads one frame. End of file is `LinkDown`; a timeout is `LinkOutcomeUnknown` only to the
/// handshake (which maps it); a malformed frame is `LinkProtocol` (or `VersionMismatch`), after
/// which the caller must drop the connection: the stream is no longer in step.
pub fn read_frame(r: &mut dyn Read, peer: &dyn fmt::Display) -> Result<Frame> {
    let mut header = [0u8; HEADER_LEN];
    read_exact(r, &mut header, peer)?;
    let h = frame::decode_header(&header).map_err(|e| e.to_error(peer))?;
    let mut payload = vec![0u8; h.len as usize];
    read_exact(r, &mut payload, peer)?;
    frame::finish(&header, &h, payload).map_err(|e| e.to_error(peer))
}

fn read_exact(r: &mut dyn Read, buf: &mut [u8], peer: &dyn fmt::Display) -> Result<()> {
    r.read_exact(buf).map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => Error::new(ErrorKind::LinkDown, peer, "connection closed by the peer"),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
            Error::new(ErrorKind::LinkDown, peer, "the peer did not answer in time")
        }
        _ => Error::new(ErrorKind::LinkDown, peer, format!("connection lost: {e}")),
    })
}

/// Writes encoded frame bytes.
pub fn write_bytes(w: &mut dyn Write, bytes: &[u8], peer: &dyn fmt::Display) -> Result<()> {
    w.write_all(bytes)
        .and_then(|()| w.flush())
        .map_err(|e| Error::new(ErrorKind::LinkDown, peer, format!("send failed: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::link::frame::{FrameType, encode};

    #[test]
    fn mem_pair_carries_bytes_both_ways_and_blocks_when_full() {
        let (mut a, mut b) = mem_pair();
        a.write_all(b"ping").unwrap();
        let mut buf = [0u8; 4];
        b.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"ping");
        b.write_all(b"pong").unwrap();
        a.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"pong");
        // More than the capacity: the writer finishes only because the reader drains.
        let big = vec![5u8; PIPE_CAPACITY * 3];
        let writer = std::thread::spawn(move || {
            a.write_all(&big).unwrap();
            a
        });
        let mut got = vec![0u8; PIPE_CAPACITY * 3];
        b.read_exact(&mut got).unwrap();
        assert!(got.iter().all(|&x| x == 5));
        writer.join().unwrap();
    }

    #[test]
    fn mem_read_timeout_and_shutdown() {
        let (a, mut b) = mem_pair();
        b.set_read_timeout(Some(Duration::from_millis(5))).unwrap();
        let mut buf = [0u8; 1];
        assert_eq!(b.read(&mut buf).unwrap_err().kind(), io::ErrorKind::WouldBlock);
        a.shutdown();
        assert_eq!(b.read(&mut buf).unwrap(), 0);
        let mut a2 = a.clone();
        assert!(a2.write(b"x").is_err());
    }

    #[test]
    fn read_frame_errors() {
        let (mut a, mut b) = mem_pair();
        a.write_all(&encode(FrameType::Reply, 3, b"ok")).unwrap();
        let f = read_frame(&mut b, &"peer").unwrap();
        assert_eq!((f.kind, f.id, f.payload.as_slice()), (FrameType::Reply, 3, &b"ok"[..]));
        let mut bad = encode(FrameType::Reply, 3, b"ok");
        bad[0] = 0;
        a.write_all(&bad).unwrap();
        assert_eq!(read_frame(&mut b, &"peer").unwrap_err().kind, ErrorKind::LinkProtocol);
        a.shutdown();
        assert_eq!(read_frame(&mut b, &"peer").unwrap_err().kind, ErrorKind::LinkDown);
    }

    #[test]
    fn only_loopback() {
        assert!(check_loopback("127.0.0.1:1".parse().unwrap()).is_ok());
        assert!(check_loopback("[::1]:1".parse().unwrap()).is_ok());
        assert_eq!(check_loopback("10.0.0.1:1".parse().unwrap()).unwrap_err().kind, ErrorKind::InvalidArgument);
    }
}
