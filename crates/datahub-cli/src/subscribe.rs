//! `datahub sub`: attach to a `pub` block and receive its files (framing in [`crate::frame`]).
//!
//! Without `--out` the files' bytes go to standard output one after the other. With
//! `--out DIR` each file is written to `DIR/.datahub-partial.<block>.data` and, once its length
//! and BLAKE2b-256 digest match the FILE_END, renamed to `DIR/<base name>` (the unnamed
//! standard-input stream is saved as `DIR/stdin`). Base names are checked by
//! [`frame::check_name`], and every file in DIR is reached relative to one descriptor of DIR
//! without following links, with the resume journal checked like a name from the wire
//! ([`crate::outdir`]), so nothing is written outside DIR.
//!
//! # Resuming after a dead consumer
//! Lossless blocks deliver the message a dead consumer was holding, and everything after it, to
//! the next consumer. So that this consumer can finish the dead one's file, every side effect of
//! a message happens while its slot is held (the position advances only after), and the journal
//! `DIR/.datahub-partial.<block>.json` records `{stream, index, name, done}`: written when a file
//! starts, and with `done` once its digest matched (just before the rename). A `sub` whose first
//! message is a DATA or FILE_END of file `i` (it joined mid-file) continues from that journal if
//! it names the same stream and file: it cuts the partial data back to the message's offset,
//! re-hashes it and goes on. Without such a journal (or with standard output) the file cannot be
//! delivered intact, and `sub` says so (exit 2). Run one `sub` per block and DIR.
//!
//! Exit codes: 0 at the end of the stream with every file verified; 1 a file's digest or length
//! did not match, a slot checksum failed, or the stream ended inside a file; 2 anything else
//! (no block, a block that is not a file stream, a producer that died or aborted, I/O);
//! 130/143 (128 + the signal) when SIGINT/SIGTERM stopped it after it attached: it stops at a
//! message boundary, detaches, deregisters from the broker, and leaves a partial file and its
//! journal for the next `sub` to resume.
//!
//! # With a broker (`--broker EP CHANNEL`, or `--channel CHANNEL [--broker EP]`)
//! `sub` asks the broker for the channel instead of a block name: it discovers it (retrying
//! `DISC_PENDING` and `CHANNEL_NOT_FOUND` with capped backoff) citing the file stream's schema
//! fingerprint (another one is `SCHEMA_MISMATCH`, exit 2), checks the block's header against
//! the announcement before and after attaching ([`ChannelInfo::attach`]), and registers as a
//! consumer (heartbeated by the client's thread), all within one overall deadline, `--wait`; a
//! broker that does not answer is one line and exit 2 at that deadline. It then receives as
//! without a broker, in read slices of [`BROKER_READ_SLICE`], and deregisters when it ends. A
//! `CHANNEL_CLOSING_NOTIFY` for the channel (its producer deregistered or went dead) before the
//! end of the stream is an error naming the channel (exit 2): `sub` reads what is already in
//! the ring, and fails at the first read that finds nothing more.

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use blake2::Digest;
use datahub::broker::{BrokerError, ChannelInfo, Client, ClientOptions, Notification};
use datahub::{Consumer, Error, Expectations, WaitCause};
use serde::Serialize;

use crate::fail::{Fail, Result, clip};
use crate::frame::{self, Blake2b256, Frame};
use crate::outdir::{Found, Journal, OutDir};
use crate::publish::{broker_fail, key_file, role_uid};

/// How long one read waits before `sub` checks that the producer is still alive. (Each such
/// idle wait counts once in the block's `reader_timeouts` metric.)
const READ_SLICE: Duration = Duration::from_secs(2);

/// The read slice with a broker: how often `sub` also looks for `CHANNEL_CLOSING_NOTIFY`.
pub const BROKER_READ_SLICE: Duration = Duration::from_millis(200);

/// Arguments of `datahub sub`.
#[derive(Debug, clap::Args)]
#[command(
    override_usage = "datahub sub [OPTIONS] NAME\n       datahub sub [OPTIONS] --broker EP CHANNEL\n       datahub sub [OPTIONS] --channel CHANNEL [--broker EP]\n       datahub sub [OPTIONS] --socket PATH --key-file KEY",
    after_help = "Without --broker or --channel the argument is a block name in /dev/shm. With --broker EP the argument is a channel name, discovered at that broker; --channel CHANNEL names the channel instead of the argument (and uses the default endpoint unless --broker is given)."
)]
pub struct SubArgs {
    /// Block name; with --broker, the channel name.
    pub name: Option<String>,
    /// Directory to write the files to (created if missing); without it, the files' bytes go to
    /// standard output one after the other.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// How long to wait for the block (or the channel, and the broker's answers) to appear
    /// (`20s`, `500ms`, or bare seconds): one overall deadline.
    #[arg(long, default_value = "30", value_parser = cli_support::parse_duration)]
    pub wait: Duration,
    /// Broker endpoint, ipc://PATH or tcp://HOST:PORT (with --key and --server-key); the
    /// argument is then a channel name.
    #[arg(long, value_name = "EP")]
    pub broker: Option<String>,
    /// Discover this channel at the broker (default endpoint as for `datahub channels`).
    #[arg(long, value_name = "CHANNEL", conflicts_with = "name")]
    pub channel: Option<String>,
    /// Attach through this Unix socket (secure attach, `pub --secure-socket`) instead of a
    /// block name. Needs --key-file.
    #[arg(long, value_name = "PATH", conflicts_with_all = ["name", "channel", "broker"], requires = "key_file")]
    pub socket: Option<PathBuf>,
    /// The block's 32-byte key (64 hex characters or 32 raw bytes, mode 0600), for keyed and
    /// secure blocks.
    #[arg(long, value_name = "PATH")]
    pub key_file: Option<PathBuf>,
    /// CURVE keys for a tcp:// broker.
    #[command(flatten)]
    pub auth: crate::broker::ClientAuthArgs,
    /// Print the summary as JSON (needs --out).
    #[arg(long)]
    pub json: bool,
}

/// One file as received.
#[derive(Debug, Serialize)]
pub struct Received {
    /// Base name as sent ("" for standard input).
    pub name: String,
    /// Where it was written (None: standard output).
    pub path: Option<PathBuf>,
    /// Bytes.
    pub bytes: u64,
    /// BLAKE2b-256, hex (verified against the sender's).
    pub blake2b: String,
    /// Continued from a dead consumer's partial file.
    pub resumed: bool,
}

/// What `sub` received.
#[derive(Debug, Serialize)]
pub struct Summary {
    /// Block name.
    pub block: String,
    /// The broker channel it was discovered as.
    pub channel: Option<String>,
    /// Files in order (a file a dead predecessor had already finished is not listed).
    pub files: Vec<Received>,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for r in &self.files {
            let path = r
                .path
                .as_ref()
                .map_or_else(|| "-".to_owned(), |p| p.display().to_string());
            let resumed = if r.resumed { " (resumed)" } else { "" };
            writeln!(
                f,
                "received {path} {} bytes blake2b {}{resumed}",
                r.bytes, r.blake2b
            )?;
        }
        if let Some(c) = &self.channel {
            write!(f, "channel {c}: ")?;
        }
        writeln!(
            f,
            "block {}: {} file(s), end of stream",
            self.block,
            self.files.len()
        )
    }
}

/// Where received bytes go.
enum Sink {
    Stdout(std::io::StdoutLock<'static>),
    Dir(OutDir),
}

impl Sink {
    fn write(&mut self, chunk: &[u8]) -> Result<()> {
        match self {
            Sink::Stdout(o) => o
                .write_all(chunk)
                .map_err(|e| Fail::from(cli_support::StdoutError::from_io(e))),
            Sink::Dir(d) => d.write(chunk),
        }
    }
}

struct Current {
    index: u32,
    name: String,
    written: u64,
    hasher: Blake2b256,
    resumed: bool,
}

struct Receiver {
    block: String,
    sink: Sink,
    stream: Option<u64>,
    /// Index of the last file finished (by this consumer or, on resume, its predecessor).
    last_done: Option<u32>,
    current: Option<Current>,
    files: Vec<Received>,
}

fn shown(name: &str) -> &str {
    if name.is_empty() { "(stdin)" } else { name }
}

impl Receiver {
    fn protocol(&self, what: String) -> Fail {
        Fail::usage(format!(
            "block {:?}: not a valid file stream: {what}",
            self.block
        ))
    }

    /// The first message is in the middle of file `index`, at byte `at`: continue from the
    /// journal of the consumer that died holding it. `Ok(false)`: the file was already finished
    /// (the message is its FILE_END); skip it.
    fn resume(&mut self, stream: u64, index: u32, at: u64) -> Result<bool> {
        let cannot = |why: &str| {
            Fail::usage(format!(
                "block {:?}: joined the stream inside file {index} (byte {at}) and {why}; that file cannot be delivered intact",
                self.block
            ))
        };
        let Sink::Dir(d) = &mut self.sink else {
            return Err(cannot(
                "standard output cannot resume it (use --out with the previous consumer's directory)",
            ));
        };
        let j = match d.read_journal() {
            Found::Valid(j) if j.stream == stream && j.index == index => j,
            Found::Invalid(why) => {
                return Err(cannot(&format!(
                    "the journal in the output directory is refused ({})",
                    clip(&why)
                )));
            }
            _ => return Err(cannot("the output directory has no partial copy of it")),
        };
        if j.done {
            if d.has_data()? {
                d.publish(&j.name)?;
            }
            self.last_done = Some(index);
            return Ok(false);
        }
        let hasher = d.reopen(at)?;
        self.current = Some(Current {
            index,
            name: j.name,
            written: at,
            hasher,
            resumed: true,
        });
        Ok(true)
    }

    fn handle(&mut self, f: Frame<'_>) -> Result<()> {
        let first = self.stream.is_none();
        match self.stream {
            Some(s) if s != f.stream() => {
                return Err(self.protocol(format!(
                    "stream id changed from {s:016x} to {:016x}",
                    f.stream()
                )));
            }
            _ => self.stream = Some(f.stream()),
        }
        match f {
            Frame::Abort { reason, .. } => {
                if let Sink::Dir(d) = &mut self.sink {
                    d.discard();
                }
                Err(Fail::usage(format!(
                    "block {:?}: the producer aborted the stream: {}",
                    self.block,
                    clip(reason)
                )))
            }
            Frame::FileStart {
                stream,
                index,
                name,
                ..
            } => {
                if let Some(c) = &self.current {
                    return Err(self.protocol(format!(
                        "file {} not finished when file {index} started",
                        c.index
                    )));
                }
                if let Some(d) = self.last_done
                    && Some(index) != d.checked_add(1)
                {
                    return Err(self.protocol(format!("file {index} follows file {d}")));
                }
                frame::check_name(name).map_err(|e| {
                    Fail::usage(format!("block {:?}: refusing a file: {e}", self.block))
                })?;
                if let Sink::Dir(d) = &mut self.sink {
                    d.start(&Journal {
                        stream,
                        index,
                        name: name.to_owned(),
                        done: false,
                    })?;
                }
                self.current = Some(Current {
                    index,
                    name: name.to_owned(),
                    written: 0,
                    hasher: Blake2b256::new(),
                    resumed: false,
                });
                Ok(())
            }
            Frame::Data {
                stream,
                index,
                offset,
                chunk,
            } => {
                if first && self.current.is_none() {
                    self.resume(stream, index, offset)?;
                }
                let c = match &mut self.current {
                    Some(c) if c.index == index && c.written == offset => c,
                    Some(c) => {
                        let what = format!(
                            "chunk of file {index} at byte {offset}, expected file {} at byte {}",
                            c.index, c.written
                        );
                        return Err(self.protocol(what));
                    }
                    None => {
                        return Err(self.protocol(format!("chunk of file {index} outside a file")));
                    }
                };
                c.hasher.update(chunk);
                c.written += chunk.len() as u64;
                self.sink.write(chunk)
            }
            Frame::FileEnd {
                stream,
                index,
                len,
                digest,
            } => {
                if first && self.current.is_none() && !self.resume(stream, index, len)? {
                    return Ok(());
                }
                let c = match self.current.take() {
                    Some(c) if c.index == index => c,
                    _ => {
                        return Err(self.protocol(format!("end of file {index} without its start")));
                    }
                };
                let name = shown(&c.name).to_owned();
                if c.written != len {
                    if let Sink::Dir(d) = &mut self.sink {
                        d.discard();
                    }
                    return Err(Fail::check(format!(
                        "file {name}: received {} bytes, the sender sent {len}",
                        c.written
                    )));
                }
                let got: [u8; 32] = c.hasher.finalize().into();
                if got != digest {
                    if let Sink::Dir(d) = &mut self.sink {
                        d.discard();
                    }
                    return Err(Fail::check(format!(
                        "file {name}: BLAKE2b-256 mismatch: sender {}, received {}",
                        frame::hex(&digest),
                        frame::hex(&got)
                    )));
                }
                let path = match &mut self.sink {
                    Sink::Dir(d) => Some(d.finish(&Journal {
                        stream,
                        index,
                        name: c.name.clone(),
                        done: true,
                    })?),
                    Sink::Stdout(_) => None,
                };
                self.files.push(Received {
                    name: c.name,
                    path,
                    bytes: len,
                    blake2b: frame::hex(&got),
                    resumed: c.resumed,
                });
                self.last_done = Some(index);
                Ok(())
            }
        }
    }

    fn end(mut self) -> Result<Summary> {
        if let Some(c) = &self.current {
            let f = Fail::check(format!(
                "block {:?}: the stream ended inside file {} after {} bytes",
                self.block,
                shown(&c.name),
                c.written
            ));
            if let Sink::Dir(d) = &mut self.sink {
                d.discard();
            }
            return Err(f);
        }
        match &mut self.sink {
            Sink::Stdout(o) => o
                .flush()
                .map_err(|e| Fail::from(cli_support::StdoutError::from_io(e)))?,
            Sink::Dir(d) => d.end(),
        }
        Ok(Summary {
            block: self.block,
            channel: None,
            files: self.files,
        })
    }
}

/// `sub --broker`: the channel found at a broker and joined as a consumer. Dropping it
/// deregisters the consumer.
struct Joined {
    client: Client,
    channel: String,
}

impl Joined {
    /// Discovers `channel` at `endpoint`, attaches to its block and registers as its consumer,
    /// all by `deadline`.
    fn join(
        endpoint: Option<&str>,
        options: ClientOptions,
        channel: &str,
        deadline: Instant,
        wait: Duration,
        exp: Expectations,
    ) -> Result<(Joined, ChannelInfo, Consumer)> {
        let uid = role_uid("sub");
        let ep = endpoint.unwrap_or("(default)");
        let client = Client::connect(endpoint, &uid, options)
            .map_err(|e| broker_fail(ep, "connecting", e))?;
        let ep = client.endpoint().to_owned();
        let fp = frame::schema().fingerprint();
        let left = || deadline.saturating_duration_since(Instant::now());
        let found = client
            .discover(channel, Some(fp), left())
            .map_err(|e| match e {
                BrokerError::Timeout { what, .. } => {
                    // The client names the broker's last answer: "... (last answer: X)".
                    let last = what
                        .rsplit_once("(last answer: ")
                        .map_or("no reply", |(_, a)| a.trim_end_matches(')'));
                    let hint = if last == "no reply" {
                        ": is `datahub broker` running there?"
                    } else {
                        ""
                    };
                    Fail::usage(format!(
                        "broker {ep}: channel {channel:?} was not live within {} s (last answer: {last}{hint})",
                        wait.as_secs_f64()
                    ))
                }
                e @ BrokerError::Refused {
                    code: datahub::broker::ErrorCode::SchemaMismatch,
                    ..
                } => Fail::usage(format!(
                    "broker {ep}: channel {channel:?} is not a `datahub pub` file stream: {e}"
                )),
                e => broker_fail(&ep, &format!("discovering channel {channel:?}"), e),
            })?;
        let c = found.attach(exp).map_err(|e| match e {
            BrokerError::Block(e) => {
                let f = Fail::block(&found.block_name, e);
                let mut named = Fail::usage(format!("channel {channel:?}: {f}"));
                named.code = f.code;
                named
            }
            e => Fail::usage(format!("channel {channel:?}: {e}")),
        })?;
        client
            .register_consumer(channel, Some(fp), left().max(Duration::from_millis(100)))
            .map_err(|e| {
                broker_fail(&ep, &format!("registering as a consumer of {channel:?}"), e)
            })?;
        let joined = Joined {
            client,
            channel: channel.to_owned(),
        };
        Ok((joined, found, c))
    }

    /// The reason of a `CHANNEL_CLOSING_NOTIFY` for this channel, if one has arrived.
    fn closing(&self) -> Option<String> {
        while let Some(n) = self.client.next_notification(Duration::ZERO) {
            if let Notification::ChannelClosing {
                channel_name,
                reason,
            } = n
                && channel_name == self.channel
            {
                return Some(reason);
            }
        }
        None
    }
}

impl Drop for Joined {
    fn drop(&mut self) {
        // A channel that closed has no consumer registrations left: NOT_REGISTERED is expected.
        let _ = self
            .client
            .deregister_consumer(&self.channel, Duration::from_secs(1));
    }
}

/// The last component of a socket path, as a name for partial files (`secure` if it has none
/// that is a valid block name).
fn socket_stem(path: &str) -> String {
    std::path::Path::new(path)
        .file_name()
        .and_then(|n| n.to_str())
        .filter(|n| !n.is_empty() && n.len() <= 200 && !n.starts_with('.'))
        .unwrap_or("secure")
        .to_owned()
}

/// What names `sub`'s partial files: the block name, or the socket's file name.
fn stem(args: &SubArgs) -> String {
    match (&args.socket, &args.name) {
        (Some(s), _) => socket_stem(&s.to_string_lossy()),
        (None, Some(n)) => n.clone(),
        (None, None) => "sub".to_owned(),
    }
}

/// Runs `datahub sub`; returns the summary (printed by the caller with `--out`).
pub fn run(args: &SubArgs) -> Result<Summary> {
    if args.json && args.out.is_none() {
        return Err(Fail::usage(
            "--json needs --out (without it standard output carries the files)",
        ));
    }
    let deadline = Instant::now() + args.wait;
    let key = args.key_file.as_deref().map(key_file).transpose()?;
    let expect = || {
        let exp = Expectations::new().schema(frame::schema());
        match key {
            Some(k) => exp.checksum_key(k),
            None => exp,
        }
    };
    let channel = match (&args.channel, &args.broker) {
        (Some(c), _) => Some(c.clone()),
        (None, Some(_)) => Some(args.name.clone().ok_or_else(|| {
            Fail::usage("--broker needs a channel name (`datahub sub --broker EP CHANNEL`)")
        })?),
        (None, None) => None,
    };
    // The output directory is checked before any wait (with a broker, again once the block
    // name, which names its partial files, is known).
    let early = match &args.out {
        Some(dir) => Some(OutDir::new(dir, &stem(args))?),
        None => None,
    };
    let (joined, block, mut c) = match (&channel, &args.socket) {
        (_, Some(sock)) => {
            let k = key.expect("clap: --socket requires --key-file");
            let c = Consumer::attach_secure_wait(sock, &k, expect(), args.wait).map_err(
                |e| match e {
                    Error::NotFound { .. } => Fail::usage(format!(
                        "nothing served secure attach on {} within {} s",
                        sock.display(),
                        args.wait.as_secs_f64()
                    )),
                    Error::SchemaMismatch { .. } => Fail::usage(format!(
                        "socket {}: the block is not a `datahub pub` file stream: {e}",
                        sock.display()
                    )),
                    e => Fail::usage(format!("socket {}: {e}", sock.display())),
                },
            )?;
            (None, stem(args), c)
        }
        (Some(ch), None) => {
            let options = args.auth.options()?;
            let (j, found, c) = Joined::join(
                args.broker.as_deref(),
                options,
                ch,
                deadline,
                args.wait,
                expect(),
            )?;
            let name = if found.block_name.is_empty() {
                // A secure channel: its socket's file name names the partial files.
                socket_stem(found.attach_socket.as_deref().unwrap_or("secure"))
            } else {
                found.block_name
            };
            (Some(j), name, c)
        }
        (None, None) => {
            let name = args
                .name
                .clone()
                .ok_or_else(|| Fail::usage("a block name is needed (`datahub sub NAME`)"))?;
            let c = Consumer::attach_wait(&name, expect(), args.wait).map_err(|e| match e {
                Error::NotFound { .. } => Fail::usage(format!(
                    "no block named {name:?} appeared in /dev/shm within {} s",
                    args.wait.as_secs_f64()
                )),
                Error::SchemaMismatch { .. } => Fail::usage(format!(
                    "block {name:?} is not a `datahub pub` file stream: {e}"
                )),
                e => Fail::block(&name, e),
            })?;
            (None, name, c)
        }
    };
    // From here on SIGINT/SIGTERM end `sub` at a message boundary (see the loop); before, while
    // it waits for the block or the channel, they end it at once (nothing to undo yet).
    crate::signals::catch();
    let name = block.as_str();
    // How the block is named in messages: with its channel when there is one.
    let what = match &channel {
        Some(ch) => format!("channel {ch:?} (block {name:?})"),
        None => format!("block {name:?}"),
    };
    let sink = match (&args.out, early) {
        (Some(_), Some(d)) if channel.is_none() => Sink::Dir(d),
        (Some(dir), _) => Sink::Dir(OutDir::new(dir, name)?),
        (None, _) => Sink::Stdout(std::io::stdout().lock()),
    };
    let mut rx = Receiver {
        block: name.to_owned(),
        sink,
        stream: None,
        last_done: None,
        current: None,
        files: Vec::new(),
    };
    let gone = || {
        Fail::usage(format!(
            "{what}: the producer is gone and the stream was not finished"
        ))
    };
    let slice = if joined.is_some() {
        BROKER_READ_SLICE
    } else {
        READ_SLICE
    };
    let mut closing: Option<String> = None;
    let mut idle = false;
    loop {
        // SIGINT/SIGTERM: stop at a message boundary; dropping `joined` deregisters the
        // consumer and dropping `c` detaches it from the block (a partial file stays for a
        // successor to resume).
        if let sig @ 1.. = crate::signals::caught() {
            return Err(Fail::interrupted(
                sig,
                format!(
                    "{what}: interrupted by {}, the stream was not finished",
                    crate::signals::name(sig)
                ),
            ));
        }
        if closing.is_none() {
            closing = joined.as_ref().and_then(Joined::closing);
        }
        // After an idle slice: a channel the broker closed, or a producer that died (or
        // left), will never send more.
        if idle && let Some(reason) = &closing {
            return Err(Fail::usage(format!(
                "{what}: the broker closed the channel ({}) before the end of the stream",
                clip(reason)
            )));
        }
        if idle && !c.producer_alive() {
            return Err(gone());
        }
        idle = false;
        let g = match c.read(slice) {
            Ok(g) => g,
            Err(Error::EndOfStream) => break,
            Err(Error::Timeout {
                cause: WaitCause::NoData,
                ..
            }) => {
                idle = true;
                continue;
            }
            Err(Error::Timeout {
                cause: WaitCause::ProducerDead,
                ..
            }) => return Err(gone()),
            Err(e) => return Err(Fail::block(name, e)),
        };
        let seq = g.seq();
        let handled = match frame::decode(&g) {
            Ok(f) => rx.handle(f),
            Err(e) => Err(Fail::usage(format!("block {name:?}: message {seq}: {e}"))),
        };
        // The release also checks that the block was not truncated under the read: then the
        // bytes were zeros, and that (not what they decoded to) is the error to report.
        match (handled, g.release()) {
            (_, Err(e @ Error::BlockTruncated { .. })) => return Err(Fail::block(name, e)),
            (Err(f), _) => {
                if let Err(e) = c.check_intact() {
                    return Err(Fail::block(name, e));
                }
                return Err(f);
            }
            (Ok(()), Err(e)) => return Err(Fail::block(name, e)),
            (Ok(()), Ok(())) => {}
        }
    }
    let mut summary = rx.end()?;
    summary.channel = channel;
    drop(joined);
    Ok(summary)
}
