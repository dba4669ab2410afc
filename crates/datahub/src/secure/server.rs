//! The producer's side: the sealed memfd and the thread that serves it on a Unix socket.

use std::fs::File;
use std::io::ErrorKind;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed, Ordering::SeqCst};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rustix::fs::{MemfdFlags, SealFlags};
use rustix::io::Errno;

use super::frame::{self, Kind, Refusal};
use super::{AttachPolicy, AttachStats};
use crate::Error;
use crate::huge::HugePages;

/// The seals a secure block carries, and a consumer demands.
pub(crate) const REQUIRED_SEALS: SealFlags = SealFlags::SHRINK
    .union(SealFlags::GROW)
    .union(SealFlags::SEAL);

/// How often the accept loop looks at its stop flag.
const POLL_EVERY: Duration = Duration::from_millis(50);

/// Default hugetlb page size when the kernel does not say (x86-64's 2 MiB).
const DEFAULT_HUGETLB: u64 = 2 << 20;

/// A new memfd, sized, reserved and sealed, and the pages it got.
pub(crate) struct Memfd {
    pub file: File,
    pub len: u64,
    pub pages: crate::block::Pages,
}

fn io(op: &'static str, label: &str, e: impl Into<std::io::Error>) -> Error {
    crate::segment::io_err(op, label, e)
}

/// The default hugetlb page size (`Hugepagesize` in `/proc/meminfo`).
fn hugetlb_size() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("Hugepagesize:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map(|kb| kb * 1024)
        .filter(|b| b.is_power_of_two() && *b >= 4096)
        .unwrap_or(DEFAULT_HUGETLB)
}

/// Sizes `fd` to `len` and reserves it (`fallocate`).
fn size_and_reserve(label: &str, fd: &OwnedFd, len: u64) -> Result<(), Error> {
    rustix::fs::ftruncate(fd, len).map_err(|e| io("ftruncate", label, e))?;
    match rustix::fs::fallocate(fd, rustix::fs::FallocateFlags::empty(), 0, len) {
        Ok(()) | Err(Errno::OPNOTSUPP) => Ok(()),
        Err(Errno::NOSPC | Errno::FBIG) => Err(Error::NoSpace {
            name: label.to_owned(),
            needed: len,
            available: 0,
        }),
        Err(e) => Err(io("fallocate", label, e)),
    }
}

/// Creates the block's memfd: with `huge` not `Off`, first `MFD_HUGETLB` (sized up to the
/// hugetlb page size; it needs a reserved pool), falling back to ordinary shmem pages
/// (`Require` fails instead). Sized to `total` (or more), reserved, and sealed
/// [`REQUIRED_SEALS`].
pub(crate) fn create_memfd(label: &str, total: u64, huge: HugePages) -> Result<Memfd, Error> {
    let base = MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING;
    let mut why_small = "huge pages off".to_owned();
    let mut got: Option<(OwnedFd, u64, crate::block::Pages)> = None;
    if huge != HugePages::Off {
        let page = hugetlb_size();
        let len = total.checked_next_multiple_of(page).unwrap_or(total);
        match rustix::fs::memfd_create(label, base | MemfdFlags::HUGETLB) {
            Ok(fd) => match size_and_reserve(label, &fd, len) {
                Ok(()) => {
                    got = Some((
                        fd,
                        len,
                        crate::block::Pages::Hugetlb(format!(
                            "memfd_create(MFD_HUGETLB), {} kB pages",
                            page / 1024
                        )),
                    ))
                }
                Err(e) => why_small = format!("MFD_HUGETLB memfd could not be reserved: {e}"),
            },
            Err(e) => why_small = format!("memfd_create(MFD_HUGETLB) failed: {e}"),
        }
        if got.is_none() && huge == HugePages::Require {
            return Err(Error::HugePagesUnavailable { why: why_small });
        }
    }
    let (fd, len, pages) = match got {
        Some(g) => g,
        None => {
            let fd =
                rustix::fs::memfd_create(label, base).map_err(|e| io("memfd_create", label, e))?;
            size_and_reserve(label, &fd, total)?;
            (fd, total, crate::block::Pages::Small(why_small))
        }
    };
    rustix::fs::fcntl_add_seals(&fd, REQUIRED_SEALS).map_err(|e| io("F_ADD_SEALS", label, e))?;
    Ok(Memfd {
        file: File::from(fd),
        len,
        pages,
    })
}

/// What the serving thread and its handshake threads share.
#[derive(Debug)]
struct Shared {
    /// A descriptor of the block's memfd (its own open file description is shared with the
    /// producer's: same seals, same pages).
    memfd: OwnedFd,
    key: [u8; 32],
    policy: AttachPolicy,
    my_uid: u32,
    my_pid: u32,
    stop: AtomicBool,
    active: AtomicUsize,
    accepted: AtomicU64,
    refused_peer: AtomicU64,
    refused_key: AtomicU64,
    failed: AtomicU64,
    timeouts: AtomicU64,
    busy: AtomicU64,
}

/// A secure producer's socket and serving thread. Dropping it stops the thread, waits for it
/// (at most one poll interval and the handshakes in flight, each bounded by the handshake
/// timeout) and unlinks the socket if the path still is the one it bound.
#[derive(Debug)]
pub(crate) struct Server {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
    path: PathBuf,
    dev: u64,
    ino: u64,
}

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

impl Server {
    /// Binds `path` atomically (a temporary name in the same directory, mode 0600, or 0666
    /// when the policy allows other users, who need write permission to connect; renamed over
    /// `path`) after checking its directory, and starts serving `memfd`.
    pub(crate) fn start(
        path: &Path,
        memfd: &File,
        key: [u8; 32],
        policy: AttachPolicy,
    ) -> Result<Server, Error> {
        let others = policy.allows_others();
        super::check_producer_dir(path, others)?;
        let shown = crate::error::clip(&path.display().to_string());
        let dir = super::parent_of(path);
        let tmp = dir.join(format!(
            ".dhsa-{}-{}",
            std::process::id(),
            TMP_COUNTER.fetch_add(1, Relaxed)
        ));
        let _ = std::fs::remove_file(&tmp);
        let listener = UnixListener::bind(&tmp).map_err(|e| io("bind", &shown, e))?;
        let undo = |e: Error| {
            let _ = std::fs::remove_file(&tmp);
            e
        };
        std::fs::set_permissions(
            &tmp,
            std::fs::Permissions::from_mode(if others { 0o666 } else { 0o600 }),
        )
        .map_err(|e| undo(io("chmod", &shown, e)))?;
        let st = std::fs::symlink_metadata(&tmp).map_err(|e| undo(io("lstat", &shown, e)))?;
        std::fs::rename(&tmp, path).map_err(|e| undo(io("rename", &shown, e)))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| io("fcntl(O_NONBLOCK)", &shown, e))?;
        let memfd = memfd
            .as_fd()
            .try_clone_to_owned()
            .map_err(|e| io("dup", &shown, e))?;
        let shared = Arc::new(Shared {
            memfd,
            key,
            policy,
            my_uid: rustix::process::geteuid().as_raw(),
            my_pid: std::process::id(),
            stop: AtomicBool::new(false),
            active: AtomicUsize::new(0),
            accepted: AtomicU64::new(0),
            refused_peer: AtomicU64::new(0),
            refused_key: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            timeouts: AtomicU64::new(0),
            busy: AtomicU64::new(0),
        });
        let s = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("datahub-attach".into())
            .spawn(move || serve(listener, s))
            .map_err(|e| {
                let _ = std::fs::remove_file(path);
                io("spawn", &shown, e)
            })?;
        Ok(Server {
            shared,
            thread: Some(thread),
            path: path.to_owned(),
            dev: st.dev(),
            ino: st.ino(),
        })
    }

    /// The socket's path.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The counters so far.
    pub(crate) fn stats(&self) -> AttachStats {
        let s = &self.shared;
        AttachStats {
            accepted: s.accepted.load(SeqCst),
            refused_peer: s.refused_peer.load(SeqCst),
            refused_key: s.refused_key.load(SeqCst),
            failed: s.failed.load(SeqCst),
            timeouts: s.timeouts.load(SeqCst),
            busy: s.busy.load(SeqCst),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shared.stop.store(true, SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        if std::fs::symlink_metadata(&self.path)
            .is_ok_and(|m| m.dev() == self.dev && m.ino() == self.ino)
        {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// The accept loop: polls the listener, hands each connection to a handshake thread while
/// fewer than `max_handshakes` run, refuses it (busy) otherwise. On stop, waits for the
/// handshake threads (each bounded by the handshake timeout).
fn serve(listener: UnixListener, s: Arc<Shared>) {
    let mut workers: Vec<JoinHandle<()>> = Vec::new();
    let timeout = rustix::time::Timespec {
        tv_sec: 0,
        tv_nsec: POLL_EVERY.as_nanos() as _,
    };
    while !s.stop.load(SeqCst) {
        workers.retain(|w| !w.is_finished());
        let mut fds = [rustix::event::PollFd::new(
            &listener,
            rustix::event::PollFlags::IN,
        )];
        match rustix::event::poll(&mut fds, Some(&timeout)) {
            Ok(0) | Err(Errno::INTR) => continue,
            Ok(_) => {}
            Err(_) => {
                std::thread::sleep(POLL_EVERY);
                continue;
            }
        }
        let stream = match listener.accept() {
            Ok((stream, _)) => stream,
            Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::Interrupted => {
                continue;
            }
            Err(_) => {
                // EMFILE and the like: back off instead of spinning.
                std::thread::sleep(POLL_EVERY);
                continue;
            }
        };
        let _ = stream.set_nonblocking(false);
        if s.active.load(SeqCst) >= s.policy.max_handshakes.max(1) {
            s.busy.fetch_add(1, SeqCst);
            let _ = stream.set_write_timeout(Some(Duration::from_millis(10)));
            let _ = frame::send_all(
                &stream,
                &frame::encode(Kind::Refuse, &[Refusal::Busy as u8]),
            );
            continue;
        }
        s.active.fetch_add(1, SeqCst);
        let w = Arc::clone(&s);
        let spawned = std::thread::Builder::new()
            .name("datahub-handshake".into())
            .spawn(move || {
                handshake(&stream, &w);
                w.active.fetch_sub(1, SeqCst);
            });
        match spawned {
            Ok(h) => workers.push(h),
            Err(_) => {
                s.active.fetch_sub(1, SeqCst);
                s.failed.fetch_add(1, SeqCst);
            }
        }
    }
    for w in workers {
        let _ = w.join();
    }
}

/// How one handshake ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    RefusedPeer,
    RefusedKey,
    Failed,
    TimedOut,
}

impl Shared {
    fn counter(&self, o: Outcome) -> &AtomicU64 {
        match o {
            Outcome::RefusedPeer => &self.refused_peer,
            Outcome::RefusedKey => &self.refused_key,
            Outcome::Failed => &self.failed,
            Outcome::TimedOut => &self.timeouts,
        }
    }
}

fn io_outcome(e: &std::io::Error) -> Outcome {
    match e.kind() {
        ErrorKind::WouldBlock | ErrorKind::TimedOut => Outcome::TimedOut,
        _ => Outcome::Failed,
    }
}

/// Sets the socket's timeouts to what is left until `deadline` (`Err`: nothing left).
fn arm(stream: &UnixStream, deadline: Instant) -> Result<(), Outcome> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left < Duration::from_millis(1) {
        return Err(Outcome::TimedOut);
    }
    stream
        .set_read_timeout(Some(left))
        .and_then(|()| stream.set_write_timeout(Some(left)))
        .map_err(|_| Outcome::Failed)
}

/// Reads one frame of `want` within the deadline.
fn expect(
    stream: &UnixStream,
    deadline: Instant,
    want: Kind,
) -> Result<[u8; frame::MAX_PAYLOAD], Outcome> {
    arm(stream, deadline)?;
    let mut r: &UnixStream = stream;
    match frame::read_frame(&mut r) {
        Ok((k, p)) if k == want => Ok(p),
        Ok(_) | Err(Ok(_)) => Err(Outcome::Failed),
        Err(Err(e)) => Err(io_outcome(&e)),
    }
}

fn send(stream: &UnixStream, deadline: Instant, f: &[u8]) -> Result<(), Outcome> {
    arm(stream, deadline)?;
    frame::send_all(stream, f).map_err(|e| io_outcome(&e))
}

/// One connection: peer credentials, HELLO, CHALLENGE, PROOF, then ACCEPT with the memfd or
/// REFUSE. The outcome is counted before the last frame goes out, so a peer that has its
/// answer sees the counter already moved.
fn handshake(stream: &UnixStream, s: &Shared) {
    match handshake_inner(stream, s) {
        Ok(()) => {}
        Err(o) => {
            s.counter(o).fetch_add(1, SeqCst);
        }
    }
}

fn handshake_inner(stream: &UnixStream, s: &Shared) -> Result<(), Outcome> {
    let deadline = Instant::now() + s.policy.handshake_timeout;
    let refuse = |why: Refusal, o: Outcome| {
        s.counter(o).fetch_add(1, SeqCst);
        let _ = send(stream, deadline, &frame::encode(Kind::Refuse, &[why as u8]));
    };
    let (pid, uid, gid) = super::peer_cred(stream).map_err(|_| Outcome::Failed)?;
    if pid == 0 || !s.policy.allows(s.my_uid, uid, gid) {
        refuse(Refusal::Peer, Outcome::RefusedPeer);
        return Ok(());
    }
    let hello = expect(stream, deadline, Kind::Hello)?;
    let nonce_c: [u8; 32] = hello;
    let nonce_p = frame::nonce().map_err(|_| Outcome::Failed)?;
    send(stream, deadline, &frame::encode(Kind::Challenge, &nonce_p))?;
    let proof = expect(stream, deadline, Kind::Proof)?;
    let m = frame::mac(
        &s.key,
        frame::LABEL_CONSUMER,
        &nonce_c,
        &nonce_p,
        pid,
        s.my_pid,
    );
    if !frame::mac_ok(m, &proof) {
        refuse(Refusal::Key, Outcome::RefusedKey);
        return Ok(());
    }
    let answer = frame::mac_bytes(frame::mac(
        &s.key,
        frame::LABEL_PRODUCER,
        &nonce_c,
        &nonce_p,
        pid,
        s.my_pid,
    ));
    let f = frame::encode(Kind::Accept, &answer);
    arm(stream, deadline)?;
    s.accepted.fetch_add(1, SeqCst);
    send_with_fd(stream, &f, &s.memfd).map_err(|e| {
        s.accepted.fetch_sub(1, SeqCst);
        io_outcome(&e)
    })
}

/// Sends `f` with `fd` attached to its first byte (`SCM_RIGHTS`), then the rest if the
/// first `sendmsg` was short.
fn send_with_fd(stream: &UnixStream, f: &[u8], fd: &OwnedFd) -> std::io::Result<()> {
    use rustix::net::{SendAncillaryBuffer, SendAncillaryMessage, SendFlags};
    let fds = [fd.as_fd()];
    let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !control.push(SendAncillaryMessage::ScmRights(&fds)) {
        return Err(ErrorKind::OutOfMemory.into());
    }
    let n = loop {
        match rustix::net::sendmsg(
            stream,
            &[std::io::IoSlice::new(f)],
            &mut control,
            SendFlags::NOSIGNAL,
        ) {
            Ok(n) => break n,
            Err(Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    };
    if n == 0 {
        return Err(ErrorKind::WriteZero.into());
    }
    frame::send_all(stream, &f[n..])
}
