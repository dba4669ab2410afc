//! `datahub pub`: create a block and stream files through it (framing in [`crate::frame`]).
//!
//! Steps: check every source first (exists, not a directory, base names valid and distinct);
//! remove a stale block of the same name whose producer is dead; create the block (lossless:
//! `Sequential`, or `SequentialSync` with `--consumers N` > 1) with the file-stream schema;
//! wait up to `--wait` for the consumers to attach; send each source as FILE_START, DATA...,
//! FILE_END; `close()` the stream; wait until the consumers have read to the end; exit, which
//! removes the block. Every wait gives up after `--wait` without progress: attaching, room in
//! the ring (one slot freed), draining (any message read).
//!
//! A source that fails while being read (I/O error) ends the run with exit 2: an ABORT frame
//! is sent if a slot frees up within 200 ms, and the stream is *not* closed, so a consumer
//! never takes a failed transfer for a finished one.
//!
//! # Signals, dead consumers, stale blocks
//! - SIGINT and SIGTERM set a flag that every wait checks at least every
//!   [`SLICE`]: `pub` then sends ABORT("interrupted by ..."), removes its block and exits 128 + the signal (130, 143), as a shell
//!   reports a program the signal stopped.
//!   (SIGKILL cannot be handled: the block stays, and `datahub remove NAME` deletes it once
//!   its producer is dead.)
//! - Waits run in slices of [`SLICE`] (with [`Producer::wait_writable`], which counts no
//!   timeouts in the block's metrics). When every registered consumer has died (the library retires
//!   dead consumers while the producer waits), `pub` says so on standard error at once and
//!   keeps waiting up to `--wait` for a consumer to take over (a new `sub` with the dead one's
//!   `--out` directory resumes its file); then it gives up with exit 2.
//! - The stale block is removed with [`datahub::remove_dead`], which holds the producer lock
//!   while it checks and unlinks: of several `pub`s racing for one stale name, one creates
//!   the block and the others exit 2 (the block is in use, or being created).
//!
//! # With a broker (`--channel CHANNEL [--broker EP] [--block NAME]`)
//! Every positional argument is then a file, and the block is named `--block` (default: the
//! channel name). Once the block exists, `pub` registers it with the broker as `CHANNEL`
//! ([`ChannelInfo::from_producer`]: schema id [`SCHEMA_ID`], version
//! [`frame::SCHEMA_VERSION`], fingerprint the header's named schema [`frame::schema`]; no
//! `schema.fields`, since the framing has no fixed field layout), waiting up to `--wait` for
//! the broker's answer (refusals such as `CHANNEL_EXISTS` exit 2). The client's thread
//! heartbeats the channel while `pub` runs; a watcher thread logs consumers joining, leaving
//! and dying (`CONSUMER_JOINED_NOTIFY`, `CONSUMER_LEFT_NOTIFY`, `CONSUMER_DIED_NOTIFY`) with
//! the channel's registered consumer count on standard error. The channel is deregistered before the block is removed, whichever way `pub` ends
//! (also on SIGINT/SIGTERM); after SIGKILL the broker declares it dead after its dead window
//! and tells the consumers (`CHANNEL_CLOSING_NOTIFY`). `--broker` needs a value; without it
//! the endpoint is [`datahub::broker::default_endpoint`], as for `datahub channels`.

use std::fs::File;
use std::io::{BufRead, BufReader, IsTerminal, Read};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use blake2::Digest;
use datahub::broker::{BrokerError, ChannelInfo, Client, ClientOptions, Notification};
use datahub::{ChecksumPolicy, Config, Error, Policy, Producer, WriteGuard};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use crate::fail::{Fail, Result, clip};
use crate::frame::{self, Blake2b256, HEADER_LEN};

/// Smallest slot `pub` accepts: a frame header plus the longest base name.
pub const MIN_SLOT_SIZE: u32 = 512;

/// Checksum policy of the block `pub` creates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Checksum {
    /// No per-slot checksums (the per-file BLAKE2b digests are still checked).
    None,
    /// BLAKE2b-256 of every slot, computed at commit and verified before it is read.
    Enforced,
}

/// Arguments of `datahub pub`.
#[derive(Debug, clap::Args)]
#[command(
    override_usage = "datahub pub [OPTIONS] NAME [FILES]...\n       datahub pub [OPTIONS] --channel CHANNEL [--broker EP] [--block NAME] [FILES]...\n       datahub pub [OPTIONS] --secure-socket PATH --key-file KEY [--channel CHANNEL] [FILES]...",
    after_help = "Without --channel the first argument is the block name and the rest are files. With --channel every argument is a file: the block is named --block (default: the channel name), registered with the broker as CHANNEL (schema datahub.files v1), heartbeated while `pub` runs and deregistered when it ends. With --secure-socket every argument is a file too: the block is a sealed memfd served on that socket to `sub --socket` with the same key."
)]
pub struct PubArgs {
    /// Without --channel: the block name (created in /dev/shm), then the files to send, in
    /// order; with --channel: only files. `-` (or no file at all) is standard input, as one
    /// unnamed stream.
    #[arg(value_name = "NAME|FILE")]
    pub args: Vec<PathBuf>,
    /// Payload bytes per slot (at least 512; rounded up to a multiple of 64).
    #[arg(long, default_value_t = 65536)]
    pub slot_size: u32,
    /// Slots in the ring.
    #[arg(long, default_value_t = 16)]
    pub slots: u32,
    /// Per-slot checksums.
    #[arg(long, value_enum, default_value_t = Checksum::Enforced)]
    pub checksum: Checksum,
    /// How long to wait for consumers to attach, and at most between two signs of their
    /// progress (`20s`, `500ms`, `5m`, or bare seconds); also bounds the broker's answer.
    #[arg(long, default_value = "30", value_parser = cli_support::parse_duration)]
    pub wait: Duration,
    /// Consumers to wait for; more than 1 selects SequentialSync (each of them gets every file).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub consumers: u32,
    /// Register the block with a broker as this channel (every argument is then a file).
    #[arg(long, value_name = "CHANNEL")]
    pub channel: Option<String>,
    /// Broker endpoint, ipc://PATH or tcp://HOST:PORT (with --key and --server-key; default as
    /// for `datahub channels`); needs --channel.
    #[arg(long, value_name = "EP", requires = "channel")]
    pub broker: Option<String>,
    /// Block name with --channel (default: the channel name).
    #[arg(long, value_name = "NAME", requires = "channel")]
    pub block: Option<String>,
    /// Serve the block on this Unix socket (secure attach: a sealed memfd, no /dev/shm name;
    /// every argument is then a file); its directory must be 0700 and yours. Needs --key-file.
    #[arg(long, value_name = "PATH", requires = "key_file")]
    pub secure_socket: Option<PathBuf>,
    /// The block's 32-byte key (64 hex characters or 32 raw bytes, mode 0600): keyed
    /// checksums, and what secure-attach consumers must prove they hold.
    #[arg(long, value_name = "PATH")]
    pub key_file: Option<PathBuf>,
    /// CURVE keys for a tcp:// broker.
    #[command(flatten)]
    pub auth: crate::broker::ClientAuthArgs,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
}

enum Input {
    Path(PathBuf),
    Stdin,
}

struct Source {
    input: Input,
    /// Name on the wire ("" for standard input).
    name: String,
    /// Length, when it is a regular file.
    len: Option<u64>,
}

impl Source {
    fn shown(&self) -> String {
        match &self.input {
            Input::Path(p) => p.display().to_string(),
            Input::Stdin => "standard input".to_owned(),
        }
    }

    fn open(&self) -> Result<Box<dyn Read>> {
        match &self.input {
            Input::Path(p) => File::open(p)
                .map(|f| Box::new(f) as Box<dyn Read>)
                .map_err(|e| Fail::usage(format!("{}: {e}", p.display()))),
            Input::Stdin => Ok(Box::new(std::io::stdin().lock())),
        }
    }
}

/// One file as sent.
#[derive(Debug, Serialize)]
pub struct Sent {
    /// Base name ("" for standard input).
    pub name: String,
    /// Bytes sent.
    pub bytes: u64,
    /// BLAKE2b-256 of those bytes, hex.
    pub blake2b: String,
}

/// What `pub` did.
#[derive(Debug, Serialize)]
pub struct Summary {
    /// Block name.
    pub block: String,
    /// The broker channel it was registered as (`--channel`).
    pub channel: Option<String>,
    /// Stream id, hex.
    pub stream: String,
    /// Slot policy.
    pub policy: Policy,
    /// Files in order.
    pub files: Vec<Sent>,
    /// Messages committed.
    pub messages: u64,
}

fn sources(files: &[PathBuf]) -> Result<Vec<Source>> {
    let dash = std::path::Path::new("-");
    let stdin = || Source {
        input: Input::Stdin,
        name: String::new(),
        len: None,
    };
    if files.is_empty() {
        return Ok(vec![stdin()]);
    }
    let mut out: Vec<Source> = Vec::with_capacity(files.len());
    for f in files {
        let s = if f == dash {
            stdin()
        } else {
            let meta =
                std::fs::metadata(f).map_err(|e| Fail::usage(format!("{}: {e}", f.display())))?;
            if meta.is_dir() {
                return Err(Fail::usage(format!(
                    "{}: is a directory (give its files)",
                    f.display()
                )));
            }
            let name = f
                .file_name()
                .and_then(|n| n.to_str())
                .ok_or_else(|| Fail::usage(format!("{}: base name is not UTF-8", f.display())))?
                .to_owned();
            frame::check_name(&name).map_err(|e| Fail::usage(format!("{}: {e}", f.display())))?;
            Source {
                input: Input::Path(f.clone()),
                name,
                len: meta.is_file().then_some(meta.len()),
            }
        };
        let key = |s: &Source| {
            if s.name.is_empty() {
                "stdin".to_owned()
            } else {
                s.name.clone()
            }
        };
        if let Some(prev) = out.iter().find(|o| key(o) == key(&s)) {
            return Err(Fail::usage(format!(
                "{} and {} have the same base name {:?}: a consumer would overwrite one with the other",
                prev.shown(),
                s.shown(),
                key(&s)
            )));
        }
        out.push(s);
    }
    Ok(out)
}

/// A stream id that differs between runs: BLAKE2b of pid and wall clock.
fn stream_id() -> u64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let mut h = Blake2b256::new();
    h.update(std::process::id().to_le_bytes());
    h.update(now.as_nanos().to_le_bytes());
    u64::from_le_bytes(h.finalize()[..8].try_into().expect("8 bytes"))
}

/// Removes block `name` if it exists and its producer is dead (a previous `pub` that was
/// killed): its stream can never be finished, and taking it over would mix two streams.
/// Atomic against other removers and creators (see [`datahub::remove_dead`]).
fn remove_stale(name: &str) -> Result {
    match datahub::remove_dead(name) {
        Ok(pid) => {
            let who = if pid == 0 {
                "it was never finished by its creator".to_owned()
            } else {
                format!("its producer pid {pid} is gone")
            };
            eprintln!("datahub: note: removed stale block {name:?} ({who})");
            Ok(())
        }
        Err(Error::NotFound { .. }) => Ok(()),
        Err(e @ (Error::BadMagic { .. } | Error::NotRegular { .. })) => Err(Fail::usage(format!(
            "block {name:?}: the name is taken by something that is not a DataHub block, left alone: {e}"
        ))),
        Err(e) => Err(Fail::block(name, e)),
    }
}

/// Longest single wait; signals and dead consumers are noticed at least this often.
pub const SLICE: Duration = Duration::from_millis(200);

/// `Err` once SIGINT or SIGTERM arrived.
fn check_signal(name: &str) -> Result {
    match crate::signals::caught() {
        0 => Ok(()),
        sig => Err(Fail::interrupted(
            sig,
            format!(
                "interrupted by {}: block {name:?} removed, the stream was not finished",
                crate::signals::name(sig)
            ),
        )),
    }
}

/// Notices, once per loss, that every consumer that was registered is gone.
struct Watch {
    had: u32,
    told: bool,
}

impl Watch {
    fn new(p: &Producer) -> Watch {
        Watch {
            had: p.consumers(),
            told: false,
        }
    }

    /// Called after each slice; `true` when the consumers are gone (the caller's deadline
    /// then runs from now).
    fn check(&mut self, p: &Producer, wait: Duration) -> bool {
        let now = p.consumers();
        if now > 0 {
            self.had = self.had.max(now);
            self.told = false;
            return false;
        }
        if self.had > 0 && !self.told {
            self.told = true;
            eprintln!(
                "datahub: note: block {:?}: its consumer(s) died; waiting up to {} for one to take over",
                p.name(),
                secs(wait)
            );
            return true;
        }
        false
    }
}

fn secs(d: Duration) -> String {
    format!("{} s", d.as_secs_f64())
}

/// Claims the next slot, waiting up to `wait` for room (in slices, see the module doc).
fn claim<'a>(p: &'a mut Producer, wait: Duration) -> Result<WriteGuard<'a>> {
    let name = p.name().to_owned();
    let mut deadline = Instant::now() + wait;
    let mut watch = Watch::new(p);
    loop {
        check_signal(&name)?;
        let slice = SLICE.min(deadline.saturating_duration_since(Instant::now()));
        match p.wait_writable(slice) {
            Ok(()) => break,
            Err(Error::Timeout { cause, .. }) => {
                if watch.check(p, wait) {
                    deadline = Instant::now() + wait;
                }
                if Instant::now() >= deadline {
                    return Err(Fail::usage(format!(
                        "block {name:?}: no room in the ring within {} ({cause}): the consumer is gone or stuck",
                        secs(wait)
                    )));
                }
            }
            Err(e) => return Err(Fail::block(&name, e)),
        }
    }
    // There is room now, so this does not wait (unless a reader slipped into the slot).
    p.write(wait).map_err(|e| Fail::block(&name, e))
}

fn commit(g: WriteGuard<'_>, len: usize, name: &str) -> Result<()> {
    g.commit(len).map(|_| ()).map_err(|e| Fail::block(name, e))
}

/// Reads until `buf` is full or the source ends; returns the bytes read.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {
                if crate::signals::caught() != 0 {
                    return Err(e);
                }
            }
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

struct Sender<'a> {
    p: &'a mut Producer,
    stream: u64,
    wait: Duration,
    bar: ProgressBar,
}

impl Sender<'_> {
    fn send(&mut self, index: u32, src: &Source) -> Result<Sent> {
        let block = self.p.name().to_owned();
        let mut g = claim(self.p, self.wait)?;
        let len =
            frame::file_start(&mut g, self.stream, index, src.len, &src.name).ok_or_else(|| {
                Fail::usage(format!("{}: base name does not fit a slot", src.shown()))
            })?;
        commit(g, len, &block)?;
        let mut r = BufReader::with_capacity(64 * 1024, src.open()?);
        let io = |e: std::io::Error| Fail::usage(format!("reading {}: {e}", src.shown()));
        let mut hasher = Blake2b256::new();
        let mut offset = 0u64;
        while !r.fill_buf().map_err(io)?.is_empty() {
            let mut g = claim(self.p, self.wait)?;
            let n = read_full(&mut r, &mut g[HEADER_LEN..]).map_err(io)?;
            hasher.update(&g[HEADER_LEN..HEADER_LEN + n]);
            let len = frame::data_header(&mut g, self.stream, index, offset, n);
            commit(g, len, &block)?;
            offset += n as u64;
            self.bar.inc(n as u64);
        }
        let digest: [u8; 32] = hasher.finalize().into();
        let mut g = claim(self.p, self.wait)?;
        let len = frame::file_end(&mut g, self.stream, index, offset, &digest);
        commit(g, len, &block)?;
        Ok(Sent {
            name: src.name.clone(),
            bytes: offset,
            blake2b: frame::hex(&digest),
        })
    }

    /// Best effort: tells the consumers why the stream stops.
    fn abort(&mut self, reason: &str) {
        if let Ok(mut g) = self.p.write(Duration::from_millis(200)) {
            let len = frame::abort(&mut g, self.stream, reason);
            let _ = g.commit(len);
        }
    }
}

fn progress_bar(total: Option<u64>) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = match total {
        Some(t) => ProgressBar::new(t),
        None => ProgressBar::no_length(),
    };
    let style = ProgressStyle::with_template(
        "{msg} [{elapsed_precise}] {wide_bar} {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec}",
    )
    .expect("valid template");
    bar.set_style(style);
    bar
}

/// Waits until the consumers have read every message; gives up after `wait` without any read.
fn drain(p: &Producer, wait: Duration) -> Result<()> {
    let mut seen = p.metrics().slots_read;
    let mut deadline = Instant::now() + wait;
    let mut watch = Watch::new(p);
    loop {
        check_signal(p.name())?;
        match p.wait_drained(SLICE) {
            Ok(()) => return Ok(()),
            Err(Error::Timeout { .. }) => {
                if watch.check(p, wait) {
                    deadline = Instant::now() + wait;
                }
                let now = p.metrics().slots_read;
                if now != seen {
                    seen = now;
                    deadline = Instant::now() + wait;
                } else if Instant::now() >= deadline {
                    return Err(Fail::usage(format!(
                        "block {:?}: the consumers read nothing for {} before the end of the stream",
                        p.name(),
                        secs(wait)
                    )));
                }
            }
            Err(e) => return Err(Fail::block(p.name(), e)),
        }
    }
}

/// The block name and the files, from the positional arguments (see [`PubArgs::args`]).
fn block_and_files(args: &PubArgs) -> Result<(String, &[PathBuf])> {
    if let Some(sock) = &args.secure_socket {
        if args.block.is_some() {
            return Err(Fail::usage(
                "--block and --secure-socket exclude each other: a secure block has no name",
            ));
        }
        return Ok((format!("memfd:{}", sock.display()), &args.args));
    }
    if let Some(channel) = &args.channel {
        let block = args.block.clone().unwrap_or_else(|| channel.clone());
        return Ok((block, &args.args));
    }
    let Some((name, files)) = args.args.split_first() else {
        return Err(Fail::usage(
            "a block name is needed (`datahub pub NAME FILES...`, or --channel CHANNEL FILES...)",
        ));
    };
    let name = name
        .to_str()
        .ok_or_else(|| Fail::usage(format!("block name {}: not UTF-8", name.display())))?;
    Ok((name.to_owned(), files))
}

/// Reads `--key-file PATH` (a block key, `datahub::secure::read_key_file`): any failure is a
/// usage error (exit 2) naming the flag.
pub(crate) fn key_file(path: &std::path::Path) -> Result<[u8; datahub::secure::KEY_LEN]> {
    datahub::secure::read_key_file(path).map_err(|e| match e {
        Error::Io { source, .. } => Fail::usage(format!("--key-file {}: {source}", path.display())),
        e => Fail::usage(e.to_string()),
    })
}

/// Runs `datahub pub`; returns the summary to print.
pub fn run(args: &PubArgs) -> Result<Summary> {
    let (name, files) = block_and_files(args)?;
    let sources = sources(files)?;
    if args.slot_size < MIN_SLOT_SIZE {
        return Err(Fail::usage(format!(
            "--slot-size {} is below the minimum of {MIN_SLOT_SIZE}",
            args.slot_size
        )));
    }
    let name = name.as_str();
    let (policy, n) = if args.consumers > 1 {
        (Policy::SequentialSync, args.consumers)
    } else {
        (Policy::Sequential, 1)
    };
    let key = args.key_file.as_deref().map(key_file).transpose()?;
    let mut config = Config::new(policy)
        .slot_size(args.slot_size)
        .slot_count(args.slots)
        .checksum(match (args.checksum, key.is_some()) {
            (Checksum::None, false) => ChecksumPolicy::None,
            // A key needs a checksum policy; Manual computes none.
            (Checksum::None, true) => ChecksumPolicy::Manual,
            (Checksum::Enforced, _) => ChecksumPolicy::Enforced,
        })
        .schema(frame::schema());
    if let Some(k) = key {
        config = config.checksum_key(k);
    }
    if policy == Policy::SequentialSync {
        config = config.max_consumers(n);
    }
    crate::signals::catch();
    let mut p = match &args.secure_socket {
        Some(sock) => {
            Producer::create_secure(sock, config, datahub::secure::AttachPolicy::default())
                .map_err(|e| match e {
                    e @ (Error::SocketDirUnsafe { .. } | Error::Io { .. }) => {
                        Fail::usage(format!("--secure-socket {}: {e}", sock.display()))
                    }
                    e => Fail::block(name, e),
                })?
        }
        None => {
            remove_stale(name)?;
            Producer::create(name, config).map_err(|e| Fail::block(name, e))?
        }
    };
    // Declared after `p`, so dropped before it: the channel is deregistered before the block
    // is removed, on every way out (success, error, SIGINT/SIGTERM).
    let _announced = match &args.channel {
        Some(channel) => Some(Announced::register(
            args.broker.as_deref(),
            args.auth.options()?,
            channel,
            &p,
            args.wait,
        )?),
        None => None,
    };
    let total = sources.iter().map(|s| s.len).sum::<Option<u64>>();
    let bar = progress_bar(total);
    bar.set_message(format!("{name}: waiting for {n} consumer(s)"));
    let attach_by = Instant::now() + args.wait;
    loop {
        check_signal(name)?;
        let slice = SLICE.min(attach_by.saturating_duration_since(Instant::now()));
        match p.wait_for_consumers(n, slice) {
            Ok(()) => break,
            Err(Error::Timeout { .. }) if Instant::now() < attach_by => {}
            Err(Error::Timeout { .. }) => {
                return Err(Fail::usage(format!(
                    "block {name:?}: {n} consumer(s) did not attach within {}",
                    secs(args.wait)
                )));
            }
            Err(e) => return Err(Fail::block(name, e)),
        }
    }
    bar.set_message(name.to_owned());
    let stream = stream_id();
    let mut sender = Sender {
        p: &mut p,
        stream,
        wait: args.wait,
        bar: bar.clone(),
    };
    let mut files = Vec::with_capacity(sources.len());
    for (i, src) in sources.iter().enumerate() {
        let index = u32::try_from(i).map_err(|_| Fail::usage("more than 2^32 files"))?;
        match sender.send(index, src) {
            Ok(sent) => files.push(sent),
            Err(f) => {
                bar.finish_and_clear();
                // A block truncated under us explains any other symptom (EFAULT reading
                // into a slot, a wait that timed out on zeroed positions).
                if let Err(e) = sender.p.check_intact() {
                    return Err(Fail::block(name, e));
                }
                sender.abort(&f.to_string());
                return Err(f);
            }
        }
    }
    p.close();
    bar.set_message(format!("{name}: waiting for the consumers to finish"));
    let drained = drain(&p, args.wait);
    bar.finish_and_clear();
    if drained.is_err() {
        p.check_intact().map_err(|e| Fail::block(name, e))?;
    }
    drained?;
    Ok(Summary {
        block: name.to_owned(),
        channel: args.channel.clone(),
        stream: format!("{stream:016x}"),
        policy,
        files,
        messages: p.next_seq(),
    })
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for s in &self.files {
            let name = if s.name.is_empty() {
                "(stdin)"
            } else {
                &s.name
            };
            writeln!(f, "sent {name} {} bytes blake2b {}", s.bytes, s.blake2b)?;
        }
        if let Some(c) = &self.channel {
            write!(f, "channel {c}: ")?;
        }
        writeln!(
            f,
            "block {}: {} file(s) in {} messages ({}), stream {}",
            self.block,
            self.files.len(),
            self.messages,
            self.policy,
            self.stream
        )
    }
}

/// Schema id `pub` registers its channels with (the file framing of [`crate::frame`]).
pub const SCHEMA_ID: &str = "datahub.files";

/// `pub --channel`: the block registered with a broker. Its heartbeats run on the client's
/// thread; a watcher thread logs consumer registrations and deaths on standard error. Dropping
/// it stops the watcher and deregisters the channel (consumers get `CHANNEL_CLOSING_NOTIFY`).
struct Announced {
    client: Arc<Client>,
    channel: String,
    stop: Arc<AtomicBool>,
    watcher: Option<std::thread::JoinHandle<()>>,
}

/// A role uid for this process: `datahub-ROLE-PID-XXXXXXXX` (8 hex digits from the pid and the
/// clock, so two hosts, or pid namespaces, behind one `tcp://` broker do not collide; a ROUTER
/// ignores a second peer with a routing id in use).
pub(crate) fn role_uid(role: &str) -> String {
    format!(
        "datahub-{role}-{}-{:08x}",
        std::process::id(),
        stream_id() as u32
    )
}

/// A broker error as one line naming the endpoint, with a hint when nothing answered.
pub(crate) fn broker_fail(endpoint: &str, what: &str, e: BrokerError) -> Fail {
    let hint = match &e {
        BrokerError::Timeout { .. } => " (is `datahub broker` running there?)",
        _ => "",
    };
    Fail::usage(format!("broker {endpoint}: {what}: {e}{hint}"))
}

impl Announced {
    /// Connects to `endpoint` (`None`: the default) and registers `p`'s block as `channel`,
    /// waiting up to `wait` for the broker's answer.
    fn register(
        endpoint: Option<&str>,
        options: ClientOptions,
        channel: &str,
        p: &Producer,
        wait: Duration,
    ) -> Result<Announced> {
        let uid = role_uid("pub");
        let ep = endpoint.unwrap_or("(default)");
        let client = Client::connect(endpoint, &uid, options)
            .map_err(|e| broker_fail(ep, "connecting", e))?;
        let ep = client.endpoint().to_owned();
        // The file framing has no fixed field layout (a slot is a 24-byte header and a body
        // of any length), so no `schema.fields`: the fingerprint is the header's named schema.
        let info = ChannelInfo::from_producer(channel, p, SCHEMA_ID, None)
            .map_err(|e| broker_fail(&ep, &format!("describing block {:?}", p.name()), e))?;
        client
            .register(&info, wait)
            .map_err(|e| broker_fail(&ep, &format!("registering channel {channel:?}"), e))?;
        let client = Arc::new(client);
        let stop = Arc::new(AtomicBool::new(false));
        let watcher = {
            let (client, stop, channel) = (client.clone(), stop.clone(), channel.to_owned());
            std::thread::Builder::new()
                .name("datahub-pub-watch".into())
                .spawn(move || watch_channel(&client, &channel, &stop))
                .map_err(|e| Fail::usage(format!("spawning a thread: {e}")))?
        };
        Ok(Announced {
            client,
            channel: channel.to_owned(),
            stop,
            watcher: Some(watcher),
        })
    }
}

impl Drop for Announced {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(w) = self.watcher.take() {
            let _ = w.join();
        }
        if let Err(e) = self
            .client
            .deregister(&self.channel, Duration::from_secs(1))
        {
            eprintln!(
                "datahub: note: channel {:?}: deregistering: {e}",
                self.channel
            );
        }
    }
}

/// Logs, until `stop`, what the broker tells the producer of `channel`: consumers joining,
/// leaving and dying, with the count after each (`CONSUMER_JOINED_NOTIFY`,
/// `CONSUMER_LEFT_NOTIFY`, `CONSUMER_DIED_NOTIFY`), and re-registrations.
fn watch_channel(client: &Client, channel: &str, stop: &AtomicBool) {
    let count = |n: u32| format!("{n} consumer(s) registered with the broker");
    while !stop.load(Ordering::Relaxed) {
        match client.next_notification(Duration::from_millis(50)) {
            Some(Notification::ConsumerJoined {
                channel_name,
                consumer_uid,
                consumer_pid,
                consumers,
            }) if channel_name == channel => eprintln!(
                "datahub: note: channel {channel:?}: consumer {:?} (pid {consumer_pid}) joined: {}",
                clip(&consumer_uid),
                count(consumers)
            ),
            Some(Notification::ConsumerLeft {
                channel_name,
                consumer_uid,
                consumer_pid,
                reason,
                consumers,
            }) if channel_name == channel => eprintln!(
                "datahub: note: channel {channel:?}: consumer {:?} (pid {consumer_pid}) left ({}): {}",
                clip(&consumer_uid),
                clip(&reason),
                count(consumers)
            ),
            Some(Notification::ConsumerDied {
                channel_name,
                consumer_uid,
                consumer_pid,
                reason,
                consumers,
            }) if channel_name == channel => eprintln!(
                "datahub: note: channel {channel:?}: consumer {:?} (pid {consumer_pid}) died ({}){}",
                clip(&consumer_uid),
                clip(&reason),
                consumers.map_or(String::new(), |n| format!(": {}", count(n)))
            ),
            Some(Notification::Reregistered { error, .. }) => match error {
                None => eprintln!(
                    "datahub: note: channel {channel:?}: the broker had lost the registration; registered again"
                ),
                Some((code, message)) => eprintln!(
                    "datahub: note: channel {channel:?}: registering again after the broker lost it was refused: {code}: {}",
                    clip(&message)
                ),
            },
            _ => {}
        }
    }
}
