//! What crosses the link: typed requests and their replies, and their payload encoding.
//!
//! Every [`Message`] is a request with a reply, so nothing is fire-and-forget: a sender always
//! learns whether the peer applied it (a [`Reply`]), or that it cannot know
//! (`ErrorKind::LinkOutcomeUnknown`). Payloads (inside `Request`/`Reply` frames, see
//! `frame.rs`), big-endian:
//!
//! ```text
//! Request  tag u8, then
//!   1 Write    volume u16, flags u8 (bit 0: FUA), offset u64, data...
//!   2 Track    volume u16, track u32, data...
//!   3 Flush    volume u16
//!   4 Command  body... (opaque to the link; the PPRC layer defines it)
//!   5 Ping
//!   6 Zero     volume u16, offset u64, length u64 (a mirrored TRIM or WRITE_ZEROES)
//! Reply    tag u8, then
//!   0 Done
//!   1 Data     bytes...
//!   2 Failed   an engine Error as JSON
//! ```

use super::frame::{Fields, FrameError};
use crate::error::Error;
use crate::id::VolumeId;
use std::fmt;

/// A request's ID: the sender's sequence number, unique for the sender's incarnation (a random
/// number each endpoint draws when it starts and announces in the handshake). The receiver
/// keys deduplication on (peer incarnation, request ID), so a request resent with the same ID,
/// on the same or a new connection, is applied at most once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestId(pub u64);

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "request {}", self.0)
    }
}

/// A request from one storage image to another.
#[derive(Clone, PartialEq, Eq)]
pub enum Message {
    /// A mirrored host write (Metro Mirror): `data` at byte `offset` of the secondary `volume`.
    /// `fua`: make it durable before replying.
    Write { volume: VolumeId, offset: u64, data: Vec<u8>, fua: bool },
    /// An out-of-sync track copied to the secondary (initial copy, resume, Global Copy drain,
    /// failback). `data` is the whole track as the volume stores it.
    Track { volume: VolumeId, track: u32, data: Vec<u8> },
    /// A FLUSH at the primary, passed on to the secondary.
    Flush { volume: VolumeId },
    /// An in-band command (remote FlashCopy over a conduit LSS, pair state changes...): opaque
    /// bytes for the layer above; its answer comes back as [`Reply::Data`].
    Command(Vec<u8>),
    /// Liveness and round-trip probe; replied `Done` by the link itself.
    Ping,
    /// A mirrored TRIM or WRITE_ZEROES: `len` zero bytes at `offset` of the secondary.
    Zero { volume: VolumeId, offset: u64, len: u64 },
}

impl fmt::Debug for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Message::Write { volume, offset, data, fua } => {
                write!(f, "Write({volume} @{offset} {} bytes{})", data.len(), if *fua { " FUA" } else { "" })
            }
            Message::Track { volume, track, data } => write!(f, "Track({volume} #{track} {} bytes)", data.len()),
            Message::Flush { volume } => write!(f, "Flush({volume})"),
            Message::Command(b) => write!(f, "Command({} bytes)", b.len()),
            Message::Ping => write!(f, "Ping"),
            Message::Zero { volume, offset, len } => write!(f, "Zero({volume} @{offset} {len} bytes)"),
        }
    }
}

/// The receiver's answer to a [`Message`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// Applied.
    Done,
    /// Applied, with an answer (in-band commands).
    Data(Vec<u8>),
    /// Refused or failed at the receiver, with the engine's error.
    Failed(Error),
}

impl Reply {
    /// `Done`/`Data` as `Ok` (the data, empty for `Done`), `Failed` as its error.
    pub fn into_result(self) -> crate::Result<Vec<u8>> {
        match self {
            Reply::Done => Ok(Vec::new()),
            Reply::Data(d) => Ok(d),
            Reply::Failed(e) => Err(e),
        }
    }
}

const MSG_WRITE: u8 = 1;
const MSG_TRACK: u8 = 2;
const MSG_FLUSH: u8 = 3;
const MSG_COMMAND: u8 = 4;
const MSG_PING: u8 = 5;
const MSG_ZERO: u8 = 6;

const REPLY_DONE: u8 = 0;
const REPLY_DATA: u8 = 1;
const REPLY_FAILED: u8 = 2;

const FLAG_FUA: u8 = 1;

impl Message {
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Message::Write { volume, offset, data, fua } => {
                let mut b = Vec::with_capacity(12 + data.len());
                b.push(MSG_WRITE);
                b.extend_from_slice(&volume.0.to_be_bytes());
                b.push(if *fua { FLAG_FUA } else { 0 });
                b.extend_from_slice(&offset.to_be_bytes());
                b.extend_from_slice(data);
                b
            }
            Message::Track { volume, track, data } => {
                let mut b = Vec::with_capacity(7 + data.len());
                b.push(MSG_TRACK);
                b.extend_from_slice(&volume.0.to_be_bytes());
                b.extend_from_slice(&track.to_be_bytes());
                b.extend_from_slice(data);
                b
            }
            Message::Flush { volume } => {
                let mut b = vec![MSG_FLUSH];
                b.extend_from_slice(&volume.0.to_be_bytes());
                b
            }
            Message::Command(body) => {
                let mut b = Vec::with_capacity(1 + body.len());
                b.push(MSG_COMMAND);
                b.extend_from_slice(body);
                b
            }
            Message::Ping => vec![MSG_PING],
            Message::Zero { volume, offset, len } => {
                let mut b = vec![MSG_ZERO];
                b.extend_from_slice(&volume.0.to_be_bytes());
                b.extend_from_slice(&offset.to_be_bytes());
                b.extend_from_slice(&len.to_be_bytes());
                b
            }
        }
    }

    pub fn decode(payload: &[u8]) -> Result<Message, FrameError> {
        let mut f = Fields::new(payload);
        let msg = match f.u8()? {
            MSG_WRITE => {
                let volume = VolumeId(f.u16()?);
                let flags = f.u8()?;
                if flags & !FLAG_FUA != 0 {
                    return Err(FrameError::BadPayload("unknown write flags"));
                }
                let offset = f.u64()?;
                Message::Write { volume, offset, data: f.rest().to_vec(), fua: flags & FLAG_FUA != 0 }
            }
            MSG_TRACK => {
                let volume = VolumeId(f.u16()?);
                let track = f.u32()?;
                Message::Track { volume, track, data: f.rest().to_vec() }
            }
            MSG_FLUSH => Message::Flush { volume: VolumeId(f.u16()?) },
            MSG_COMMAND => Message::Command(f.rest().to_vec()),
            MSG_PING => Message::Ping,
            MSG_ZERO => Message::Zero { volume: VolumeId(f.u16()?), offset: f.u64()?, len: f.u64()? },
            _ => return Err(FrameError::BadPayload("unknown message type")),
        };
        f.end()?;
        Ok(msg)
    }
}

impl Reply {
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Reply::Done => vec![REPLY_DONE],
            Reply::Data(d) => {
                let mut b = Vec::with_capacity(1 + d.len());
                b.push(REPLY_DATA);
                b.extend_from_slice(d);
                b
            }
            Reply::Failed(e) => {
                let mut b = vec![REPLY_FAILED];
                // An Error is plain strings and a unit enum: serializing it cannot fail.
                b.extend(serde_json::to_vec(e).unwrap_or_default());
                b
            }
        }
    }

    pub fn decode(payload: &[u8]) -> Result<Reply, FrameError> {
        let mut f = Fields::new(payload);
        let reply = match f.u8()? {
            REPLY_DONE => Reply::Done,
            REPLY_DATA => Reply::Data(f.rest().to_vec()),
            REPLY_FAILED => Reply::Failed(
                serde_json::from_slice(f.rest()).map_err(|_| FrameError::BadPayload("reply error is not valid"))?,
            ),
            _ => return Err(FrameError::BadPayload("unknown reply type")),
        };
        f.end()?;
        Ok(reply)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    fn messages() -> Vec<Message> {
        vec![
            Message::Write { volume: VolumeId(0x0100), offset: 65_536 * 7 + 512, data: vec![7; 4096], fua: true },
            Message::Write { volume: VolumeId(0xFE01), offset: 0, data: Vec::new(), fua: false },
            Message::Track { volume: VolumeId(0x1F00), track: 123_456, data: vec![1; 65_536] },
            Message::Flush { volume: VolumeId(0x0001) },
            Message::Command(br#"{"verb":"mkremoteflash"}"#.to_vec()),
            Message::Command(Vec::new()),
            Message::Ping,
            Message::Zero { volume: VolumeId(0x0102), offset: 65_536, len: 1 << 30 },
        ]
    }

    #[test]
    fn messages_round_trip() {
        for m in messages() {
            assert_eq!(Message::decode(&m.encode()).unwrap(), m, "{m:?}");
        }
    }

    #[test]
    fn replies_round_trip() {
        let err = Error::new(ErrorKind::VolumeNotFound, "0100", "no such volume");
        for r in [Reply::Done, Reply::Data(b"answer".to_vec()), Reply::Data(Vec::new()), Reply::Failed(err)] {
            assert_eq!(Reply::decode(&r.encode()).unwrap(), r);
        }
        assert_eq!(Reply::Data(b"x".to_vec()).into_result().unwrap(), b"x");
        assert!(Reply::Failed(Error::new(ErrorKind::Io, "", "")).into_result().is_err());
    }

    #[test]
    fn malformed_payloads_refused() {
        let bad: &[&[u8]] = &[
            &[],                                              // no tag
            &[0],                                             // unknown message type
            &[99],                                            // unknown message type
            &[MSG_WRITE, 1],                                  // truncated volume
            &[MSG_WRITE, 1, 0, 0, 0, 0],                      // truncated offset
            &[MSG_WRITE, 1, 0, 0x80, 0, 0, 0, 0, 0, 0, 0, 0], // unknown write flag
            &[MSG_TRACK, 1, 0, 0, 0],                         // truncated track number
            &[MSG_FLUSH, 1],                                  // truncated volume
            &[MSG_FLUSH, 1, 0, 9],                            // trailing bytes
            &[MSG_PING, 0],                                   // trailing bytes
            &[MSG_ZERO, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],  // truncated length
        ];
        for b in bad {
            assert!(matches!(Message::decode(b), Err(FrameError::BadPayload(_))), "{b:?}");
        }
        for b in [&[][..], &[7], &[REPLY_DONE, 1], &[REPLY_FAILED, b'{']] {
            assert!(matches!(Reply::decode(b), Err(FrameError::BadPayload(_))), "{b:?}");
        }
    }
}
