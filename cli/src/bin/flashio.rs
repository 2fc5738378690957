//! flashio: NBD host I/O for scripts and benchmarks.
//!
//! Talks to any NBD server (flashd's `nbd.sock`, qemu-nbd) with the engine's pipelined client.
//! Success prints results on stdout only; errors print one line on stderr and exit 1 (`compare`
//! exits 1 for "different" and 2 for errors, like cmp(1)); usage errors exit 2 (clap).
//! Sizes and offsets take K, M, G, T suffixes (powers of 1024).

#[path = "../flashio/ops.rs"]
mod ops;

use anyhow::{Context, Result, bail};
use clap::{ArgGroup, Parser, Subcommand};
use flashtrack::geometry::TRACK_BYTES;
use flashtrack::nbd::client::{self, Client, Endpoint};
use ops::{OrderedReader, Pipe};
use std::io::{self, Write};
use std::net::ToSocketAddrs;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, Parser)]
#[command(name = "flashio", version, about = "NBD host I/O for scripts and benchmarks")]
struct Cli {
    /// NBD server Unix socket (e.g. the site home's nbd.sock).
    #[arg(long, value_name = "PATH", global = true, conflicts_with = "tcp")]
    socket: Option<PathBuf>,
    /// NBD server on TCP.
    #[arg(long, value_name = "HOST:PORT", global = true)]
    tcp: Option<String>,
    /// Requests in flight per connection.
    #[arg(long, default_value_t = 32, global = true)]
    depth: usize,
    /// Bytes per request.
    #[arg(long, value_name = "SIZE", default_value = "1M", value_parser = parse_size, global = true)]
    io_size: u64,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Write a byte pattern or seeded random data to a range, then flush.
    #[command(group(ArgGroup::new("data").required(true).args(["pattern", "random"])))]
    Write {
        export: String,
        #[arg(long, value_parser = parse_size, default_value = "0")]
        offset: u64,
        #[arg(long, value_parser = parse_size)]
        length: u64,
        /// Fill byte, e.g. 0xAB or 171.
        #[arg(long, value_parser = parse_byte)]
        pattern: Option<u8>,
        /// Pseudo-random data determined by --seed and each byte's offset.
        #[arg(long)]
        random: bool,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Send every write with FUA.
        #[arg(long)]
        fua: bool,
        /// Skip the final FLUSH.
        #[arg(long)]
        no_flush: bool,
    },
    /// Read a range into a file ("-" for stdout).
    Read {
        export: String,
        #[arg(long, value_parser = parse_size, default_value = "0")]
        offset: u64,
        /// Default: to the end of the export.
        #[arg(long, value_parser = parse_size)]
        length: Option<u64>,
        #[arg(long, short = 'o')]
        output: PathBuf,
    },
    /// Print the CRC-32C (hex) of a range (default: the whole export).
    Checksum {
        export: String,
        #[arg(long, value_parser = parse_size, default_value = "0")]
        offset: u64,
        #[arg(long, value_parser = parse_size)]
        length: Option<u64>,
    },
    /// Compare two exports: exit 0 if identical, 1 (printing the first differing offset) if not.
    Compare { export_a: String, export_b: String },
    /// Write a seeded random set of whole 64 KiB tracks; prints how many.
    Dirty {
        export: String,
        /// Fraction of the export's tracks to write, 0..=1.
        #[arg(long)]
        fraction: f64,
        #[arg(long)]
        seed: u64,
        /// Fill byte; default: seeded random data.
        #[arg(long, value_parser = parse_byte)]
        pattern: Option<u8>,
        /// Also write the track numbers, one per line, to FILE.
        #[arg(long, value_name = "FILE")]
        list: Option<PathBuf>,
    },
    /// List the server's exports.
    List,
}

/// Parses `123`, `4K`, `1M`, `2G`, `1T` (also `KiB` style; powers of 1024).
fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, suffix) = t.split_at(split);
    let n: u64 = num.parse().map_err(|_| format!("invalid size {s:?}"))?;
    let shift = match suffix.to_ascii_uppercase().trim_end_matches("IB").trim_end_matches('B') {
        "" => 0,
        "K" => 10,
        "M" => 20,
        "G" => 30,
        "T" => 40,
        _ => return Err(format!("invalid size suffix in {s:?} (use K, M, G, T)")),
    };
    n.checked_mul(1u64 << shift).ok_or_else(|| format!("size {s:?} is too large"))
}

fn parse_byte(s: &str) -> Result<u8, String> {
    let r = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u8::from_str_radix(hex, 16),
        None => s.parse(),
    };
    r.map_err(|_| format!("invalid byte {s:?} (use 0..255 or 0x00..0xff)"))
}

/// stdout went away (EPIPE): end quietly, like other Unix tools.
#[derive(Debug)]
struct StdoutClosed;

impl std::fmt::Display for StdoutClosed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("stdout closed")
    }
}

impl std::error::Error for StdoutClosed {}

fn stdout_err(e: io::Error) -> anyhow::Error {
    if e.kind() == io::ErrorKind::BrokenPipe {
        StdoutClosed.into()
    } else {
        anyhow::Error::new(e).context("writing stdout")
    }
}

fn say(line: impl std::fmt::Display) -> Result<()> {
    let mut out = io::stdout().lock();
    writeln!(out, "{line}").and_then(|()| out.flush()).map_err(stdout_err)
}

struct Ctx {
    ep: Endpoint,
    pipe: Pipe,
}

impl Ctx {
    fn connect(&self, export: &str) -> Result<(Client, Pipe)> {
        let c = Client::connect(&self.ep, export).with_context(|| format!("cannot open export {export:?}"))?;
        let pipe = self.pipe.for_client(&c);
        Ok((c, pipe))
    }
}

fn endpoint(cli: &Cli) -> Result<Endpoint> {
    match (&cli.socket, &cli.tcp) {
        (Some(p), _) => Ok(Endpoint::Unix(p.clone())),
        (None, Some(hp)) => {
            let addr = hp.to_socket_addrs().with_context(|| format!("cannot resolve {hp}"))?.next();
            Ok(Endpoint::Tcp(addr.with_context(|| format!("{hp} resolves to no address"))?))
        }
        (None, None) => bail!("give the server with --socket PATH or --tcp HOST:PORT"),
    }
}

/// Runs the command; `Ok(false)` means "compare found a difference".
fn run(cli: Cli) -> Result<bool> {
    let io_size = u32::try_from(cli.io_size).ok().filter(|&n| n > 0).context("--io-size must be 1..4G")?;
    let ctx = Ctx { ep: endpoint(&cli)?, pipe: Pipe { io_size, depth: cli.depth.max(1) } };
    match cli.cmd {
        Cmd::Write { export, offset, length, pattern, random: _, seed, fua, no_flush } => {
            let (mut c, pipe) = ctx.connect(&export)?;
            ops::check_range(&c, offset, length)?;
            ops::write_extents(&mut c, pipe, [(offset, length)], fua, |off, buf| match pattern {
                Some(b) => buf.fill(b),
                None => ops::fill_random(seed, off, buf),
            })?;
            finish(c, !no_flush)?;
        }
        Cmd::Read { export, offset, length, output } => {
            let (mut c, pipe) = ctx.connect(&export)?;
            let len = length.unwrap_or(c.size().saturating_sub(offset));
            ops::check_range(&c, offset, len)?;
            let to_stdout = output.as_os_str() == "-";
            let mut sink: Box<dyn Write> = if to_stdout {
                Box::new(io::stdout().lock())
            } else {
                let f =
                    std::fs::File::create(&output).with_context(|| format!("cannot create {}", output.display()))?;
                Box::new(io::BufWriter::with_capacity(1 << 20, f))
            };
            let wrap = |e: io::Error| {
                if to_stdout {
                    stdout_err(e)
                } else {
                    anyhow::Error::new(e).context(format!("writing {}", output.display()))
                }
            };
            let mut rd = OrderedReader::new(&mut c, pipe, offset, len);
            while let Some((_, data)) = rd.next_chunk()? {
                sink.write_all(&data).map_err(wrap)?;
            }
            sink.flush().map_err(wrap)?;
            finish(c, false)?;
        }
        Cmd::Checksum { export, offset, length } => {
            let (mut c, pipe) = ctx.connect(&export)?;
            let len = length.unwrap_or(c.size().saturating_sub(offset));
            ops::check_range(&c, offset, len)?;
            let mut crc = 0u32;
            let mut rd = OrderedReader::new(&mut c, pipe, offset, len);
            while let Some((_, data)) = rd.next_chunk()? {
                crc = crc32c::crc32c_append(crc, &data);
            }
            finish(c, false)?;
            say(format_args!("{crc:08x}"))?;
        }
        Cmd::Compare { export_a, export_b } => return compare(&ctx, &export_a, &export_b),
        Cmd::Dirty { export, fraction, seed, pattern, list } => {
            if !(0.0..=1.0).contains(&fraction) {
                bail!("--fraction must be between 0 and 1, got {fraction}");
            }
            let (mut c, pipe) = ctx.connect(&export)?;
            let size = c.size();
            let n = size.div_ceil(TRACK_BYTES);
            let k = (fraction * n as f64).round() as u64;
            let tracks = ops::pick_tracks(n, k, seed);
            let extents = tracks.iter().map(|&t| (t * TRACK_BYTES, TRACK_BYTES.min(size - t * TRACK_BYTES)));
            // A different stream from the track choice, so data and selection are independent.
            let data_seed = seed ^ 0x5EED_DA7A_5EED_DA7A;
            ops::write_extents(&mut c, pipe, extents, false, |off, buf| match pattern {
                Some(b) => buf.fill(b),
                None => ops::fill_random(data_seed, off, buf),
            })?;
            finish(c, true)?;
            if let Some(path) = list {
                let text: String = tracks.iter().map(|t| format!("{t}\n")).collect();
                std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
            }
            say(tracks.len())?;
        }
        Cmd::List => {
            for name in client::list(&ctx.ep).context("cannot list exports")? {
                say(name)?;
            }
        }
    }
    Ok(true)
}

/// Optional FLUSH, then a clean NBD disconnect.
fn finish(mut c: Client, flush: bool) -> Result<()> {
    if flush {
        c.flush().context("FLUSH failed")?;
    }
    c.disconnect().context("disconnect failed")
}

fn compare(ctx: &Ctx, a: &str, b: &str) -> Result<bool> {
    let (mut ca, pipe) = ctx.connect(a)?;
    let (mut cb, _) = ctx.connect(b)?;
    let (sa, sb) = (ca.size(), cb.size());
    let common = sa.min(sb);
    let mut first_diff = None;
    {
        let mut ra = OrderedReader::new(&mut ca, pipe, 0, common);
        let mut rb = OrderedReader::new(&mut cb, pipe, 0, common);
        while let (Some((off, da)), Some((_, db))) = (ra.next_chunk()?, rb.next_chunk()?) {
            if let Some(i) = da.iter().zip(&db).position(|(x, y)| x != y) {
                first_diff = Some(off + i as u64);
                break;
            }
        }
    }
    // Always a clean disconnect (it collects reads still in flight after an early exit):
    // a script may remove the volume right after, and the server must see the session end.
    finish(ca, false)?;
    finish(cb, false)?;
    match first_diff {
        Some(off) => say(format_args!("differ at offset {off}"))?,
        None if sa != sb => say(format_args!("differ at offset {common} (sizes {sa} and {sb})"))?,
        None => return Ok(true),
    }
    Ok(false)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let is_compare = matches!(cli.cmd, Cmd::Compare { .. });
    match run(cli) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) if e.downcast_ref::<StdoutClosed>().is_some() => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("flashio: {e:#}");
            ExitCode::from(if is_compare { 2 } else { 1 })
        }
    }
}

#[cfg(test)]
#[path = "../flashio/tests.rs"]
mod tests;
