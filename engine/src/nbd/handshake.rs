//! Fixed-newstyle handshake (server side): greeting, client flags, option haggling.
//!
//! Supported options: `GO`, `INFO`, `EXPORT_NAME`, `LIST`, `ABORT`, `STRUCTURED_REPLY`,
//! `LIST_META_CONTEXT`, `SET_META_CONTEXT` (query rules in [`super::context`]). Every other
//! option (`STARTTLS`, `EXTENDED_HEADERS`, which qemu tries first) gets `NBD_REP_ERR_UNSUP`.
//!
//! State carried to the transmission phase ([`Session`]): whether structured replies were
//! agreed, and the contexts of the last `SET_META_CONTEXT`, kept only if it named the export
//! the client finally opens (the spec's rule; otherwise the session has no contexts and
//! `BLOCK_STATUS` gets `EINVAL`). `SET_META_CONTEXT` without structured replies is
//! `NBD_REP_ERR_INVALID`; `LIST_META_CONTEXT` is answered either way (the spec: MAY refuse).
//!
//! Every `INFO`/`GO` reply carries `NBD_INFO_BLOCK_SIZE`: minimum [`Export::block_size`]
//! (512, 4096 on 4K devices), preferred 64 KiB (the track), maximum [`proto::MAX_PAYLOAD`].
//!
//! Options longer than [`proto::MAX_OPTION_LEN`] get `NBD_REP_ERR_INVALID` after their payload is
//! discarded; beyond [`DISCARD_LIMIT`] (or for `EXPORT_NAME`, which has no error reply) the
//! connection is closed, since such a client only wastes the server's time.

use super::context::{self, MetaContext, QueryError};
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
    | proto::TFLAG_CAN_MULTI_CONN
    | proto::TFLAG_SEND_CACHE;

/// The outcome of a successful handshake: the export the client will use and what was agreed.
pub struct Session {
    pub name: String,
    pub export: Arc<dyn Export>,
    /// `NBD_OPT_STRUCTURED_REPLY` was acknowledged: READ and BLOCK_STATUS answer in chunks.
    pub structured: bool,
    /// Contexts selected for this export; empty: `BLOCK_STATUS` is refused.
    pub contexts: Vec<MetaContext>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("name", &self.name)
            .field("size", &self.export.size())
            .field("structured", &self.structured)
            .field("contexts", &self.contexts)
            .finish()
    }
}

/// What the options so far have agreed.
#[derive(Debug, Default)]
struct Agreed {
    structured: bool,
    no_zeroes: bool,
    /// Export name (as resolved) and contexts of the last `SET_META_CONTEXT`.
    meta: Option<(String, Vec<MetaContext>)>,
}

impl Agreed {
    fn session(&self, name: String, export: Arc<dyn Export>) -> Session {
        let contexts = match &self.meta {
            Some((n, c)) if *n == name => c.clone(),
            _ => Vec::new(),
        };
        Session { name, export, structured: self.structured, contexts }
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
    let mut agreed = Agreed { no_zeroes: client_flags & proto::FLAG_C_NO_ZEROES != 0, ..Agreed::default() };

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
                let reply = proto::encode_export_name_reply(export.size(), tflags(export.as_ref()), agreed.no_zeroes);
                send(s, &reply)?;
                return Ok(Some(agreed.session(name, export)));
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
            proto::OPT_STRUCTURED_REPLY => {
                if data.is_empty() {
                    agreed.structured = true;
                    proto::encode_option_reply(&mut out, h.option, proto::REP_ACK, &[]);
                } else {
                    err_reply(&mut out, h.option, proto::REP_ERR_INVALID, "STRUCTURED_REPLY takes no data");
                }
                send(s, &out)?;
            }
            proto::OPT_LIST_META_CONTEXT | proto::OPT_SET_META_CONTEXT => {
                meta_context(&mut out, h.option, &data, catalog, &mut agreed);
                send(s, &out)?;
            }
            proto::OPT_INFO | proto::OPT_GO => {
                let session = info_or_go(&mut out, h.option, &data, catalog, &agreed);
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

/// Answers LIST_META_CONTEXT or SET_META_CONTEXT into `out`; a SET replaces `agreed.meta`
/// (emptied first: the spec says a failed SET leaves no contexts selected either).
fn meta_context(out: &mut Vec<u8>, option: u32, data: &[u8], catalog: &dyn ExportCatalog, agreed: &mut Agreed) {
    let set = option == proto::OPT_SET_META_CONTEXT;
    if set {
        agreed.meta = None;
        if !agreed.structured {
            err_reply(out, option, proto::REP_ERR_INVALID, "SET_META_CONTEXT needs STRUCTURED_REPLY first");
            return;
        }
    }
    let req = match proto::decode_meta_context_request(data) {
        Ok(r) => r,
        Err(e) => return err_reply(out, option, proto::REP_ERR_INVALID, &e.to_string()),
    };
    let Some((name, export)) = open(catalog, &req.export) else {
        return err_reply(out, option, proto::REP_ERR_UNKNOWN, &format!("no export named {:?}", req.export));
    };
    let offered = context::offered(export.as_ref());
    drop(export);
    let replies: Result<Vec<(u32, String)>, QueryError> = if set {
        context::select(&offered, &req.queries).map(|chosen| {
            let r = chosen.iter().map(|c| (c.id, c.name.clone())).collect();
            agreed.meta = Some((name, chosen));
            r
        })
    } else {
        // LIST ids are reserved: 0.
        context::list(&offered, &req.queries).map(|names| names.into_iter().map(|n| (0, n)).collect())
    };
    match replies {
        Ok(replies) => {
            for (id, n) in replies {
                proto::encode_option_reply(
                    out,
                    option,
                    proto::REP_META_CONTEXT,
                    &proto::encode_rep_meta_context(id, &n),
                );
            }
            proto::encode_option_reply(out, option, proto::REP_ACK, &[]);
        }
        Err(QueryError::Invalid(msg)) => err_reply(out, option, proto::REP_ERR_INVALID, &msg),
        Err(QueryError::TooBig) => err_reply(out, option, proto::REP_ERR_TOO_BIG, "too many contexts selected"),
    }
}

/// Answers INFO or GO into `out`; returns the opened export when the answer was success.
fn info_or_go(
    out: &mut Vec<u8>,
    option: u32,
    data: &[u8],
    catalog: &dyn ExportCatalog,
    agreed: &Agreed,
) -> Option<Session> {
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
    Some(agreed.session(name, export))
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
