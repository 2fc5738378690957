//! Fixed-newstyle handshake (server side): greeting, client flags, option haggling.
//!
//! Supported options: `GO`, `INFO`, `EXPORT_NAME`, `LIST`, `ABORT`. Every other option (qemu
//! sends `EXTENDED_HEADERS`, `STRUCTURED_REPLY` and `SET_META_CONTEXT` first) gets
//! `NBD_REP_ERR_UNSUP`, after which qemu and libnbd fall back to simple replies.
//!
//! Options longer than [`proto::MAX_OPTION_LEN`] get `NBD_REP_ERR_INVALID` after their payload is
//! discarded; beyond [`DISCARD_LIMIT`] (or for `EXPORT_NAME`, which has no error reply) the
//! connection is closed, since such a client only wastes the server's time.

use super::proto;
use super::{Export, ExportCatalog};
use std::io::{self, Read, Write};
use std::sync::Arc;

/// Largest oversized option payload we read and throw away before giving up on the client.
pub const DISCARD_LIMIT: u32 = 64 << 10;

/// Transmission flags every export advertises; `READ_ONLY` is added per export.
pub const BASE_TFLAGS: u16 = proto::TFLAG_HAS_FLAGS
    | proto::TFLAG_SEND_FLUSH
    | proto::TFLAG_SEND_FUA
    | proto::TFLAG_SEND_TRIM
    | proto::TFLAG_SEND_WRITE_ZEROES
    | proto::TFLAG_CAN_MULTI_CONN;

/// The outcome of a successful handshake: the export the client will use.
pub struct Session {
    pub name: String,
    pub export: Arc<dyn Export>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session").field("name", &self.name).field("size", &self.export.size()).finish()
    }
}

/// Transmission flags for `export`.
pub fn tflags(export: &dyn Export) -> u16 {
    if export.read_only() { BASE_TFLAGS | proto::TFLAG_READ_ONLY } else { BASE_TFLAGS }
}

fn invalid(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

/// Runs the handshake on `s`. `Ok(None)`: the client aborted cleanly. `Err`: the connection must
/// be closed (I/O error, protocol violation, or an `EXPORT_NAME` we cannot satisfy).
pub fn negotiate<S: Read + Write>(s: &mut S, catalog: &dyn ExportCatalog) -> io::Result<Option<Session>> {
    s.write_all(&proto::encode_greeting(proto::FLAG_FIXED_NEWSTYLE | proto::FLAG_NO_ZEROES))?;
    s.flush()?;
    let mut cf = [0u8; 4];
    s.read_exact(&mut cf)?;
    let client_flags = u32::from_be_bytes(cf);
    if client_flags & proto::FLAG_C_FIXED_NEWSTYLE == 0 {
        return Err(invalid("client does not speak fixed newstyle"));
    }
    if client_flags & !proto::KNOWN_CLIENT_FLAGS != 0 {
        // The spec says MUST close on client flags we do not recognize.
        return Err(invalid(format!("unknown client flags {client_flags:#x}")));
    }
    let no_zeroes = client_flags & proto::FLAG_C_NO_ZEROES != 0;

    loop {
        let mut hb = [0u8; proto::OPTION_HEADER_LEN];
        s.read_exact(&mut hb)?;
        let h = proto::decode_option_header(&hb)?;
        let mut out = Vec::new();

        if h.length > proto::MAX_OPTION_LEN {
            if h.option == proto::OPT_EXPORT_NAME || h.length > DISCARD_LIMIT {
                return Err(invalid(format!("option {} with {} bytes of data", h.option, h.length)));
            }
            discard(s, h.length)?;
            err_reply(&mut out, h.option, proto::REP_ERR_INVALID, "option data too long");
            send(s, &out)?;
            continue;
        }
        let mut data = vec![0u8; h.length as usize];
        s.read_exact(&mut data)?;

        match h.option {
            proto::OPT_EXPORT_NAME => {
                // No error reply exists for EXPORT_NAME: an unknown name closes the connection.
                let name = String::from_utf8(data).map_err(|_| invalid("export name is not UTF-8"))?;
                let Some((name, export)) = open(catalog, &name) else {
                    return Err(invalid(format!("unknown export {name:?}")));
                };
                let reply = proto::encode_export_name_reply(export.size(), tflags(export.as_ref()), no_zeroes);
                send(s, &reply)?;
                return Ok(Some(Session { name, export }));
            }
            proto::OPT_ABORT => {
                proto::encode_option_reply(&mut out, h.option, proto::REP_ACK, &[]);
                // The client may already have closed; that is its right after ABORT.
                let _ = send(s, &out);
                return Ok(None);
            }
            proto::OPT_LIST => {
                if data.is_empty() {
                    for name in catalog.list() {
                        proto::encode_option_reply(
                            &mut out,
                            h.option,
                            proto::REP_SERVER,
                            &proto::encode_rep_server(&name),
                        );
                    }
                    proto::encode_option_reply(&mut out, h.option, proto::REP_ACK, &[]);
                } else {
                    err_reply(&mut out, h.option, proto::REP_ERR_INVALID, "LIST takes no data");
                }
                send(s, &out)?;
            }
            proto::OPT_INFO | proto::OPT_GO => {
                let session = info_or_go(&mut out, h.option, &data, catalog);
                send(s, &out)?;
                if h.option == proto::OPT_GO
                    && let Some(session) = session
                {
                    return Ok(Some(session));
                }
                // INFO: the session's Arc drops here, closing the probe.
            }
            other => {
                let msg = format!("option {other} is not supported");
                err_reply(&mut out, other, proto::REP_ERR_UNSUP, &msg);
                send(s, &out)?;
            }
        }
    }
}

/// Answers INFO or GO into `out`; returns the opened export when the answer was success.
fn info_or_go(out: &mut Vec<u8>, option: u32, data: &[u8], catalog: &dyn ExportCatalog) -> Option<Session> {
    let req = match proto::decode_info_request(data) {
        Ok(r) => r,
        Err(e) => {
            err_reply(out, option, proto::REP_ERR_INVALID, &e.to_string());
            return None;
        }
    };
    let Some((name, export)) = open(catalog, &req.name) else {
        err_reply(out, option, proto::REP_ERR_UNKNOWN, &format!("no export named {:?}", req.name));
        return None;
    };
    let tf = tflags(export.as_ref());
    proto::encode_option_reply(out, option, proto::REP_INFO, &proto::encode_info_export(export.size(), tf));
    // Sent whether asked or not (the spec allows it); qemu asks for it anyway.
    let min = export.block_size().clamp(1, proto::PREFERRED_BLOCK_SIZE);
    let bs = proto::encode_info_block_size(min, proto::PREFERRED_BLOCK_SIZE, proto::MAX_PAYLOAD);
    proto::encode_option_reply(out, option, proto::REP_INFO, &bs);
    if req.requests.contains(&proto::INFO_NAME) {
        proto::encode_option_reply(out, option, proto::REP_INFO, &proto::encode_info_name(&name));
    }
    proto::encode_option_reply(out, option, proto::REP_ACK, &[]);
    Some(Session { name, export })
}

/// Resolves `name` (the empty default name maps to the only export, if there is exactly one).
fn open(catalog: &dyn ExportCatalog, name: &str) -> Option<(String, Arc<dyn Export>)> {
    let name = if name.is_empty() {
        let mut all = catalog.list();
        if all.len() != 1 {
            return None;
        }
        all.pop()?
    } else {
        name.to_owned()
    };
    let export = catalog.open(&name)?;
    Some((name, export))
}

fn err_reply(out: &mut Vec<u8>, option: u32, ty: u32, msg: &str) {
    proto::encode_option_reply(out, option, ty, msg.as_bytes());
}

fn send<S: Write>(s: &mut S, bytes: &[u8]) -> io::Result<()> {
    s.write_all(bytes)?;
    s.flush()
}

fn discard<S: Read>(s: &mut S, len: u32) -> io::Result<()> {
    let n = io::copy(&mut s.take(u64::from(len)), &mut io::sink())?;
    if n < u64::from(len) {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    Ok(())
}

#[cfg(test)]
#[path = "handshake_tests.rs"]
mod tests;
