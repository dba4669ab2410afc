//! The consumer's side: connect, prove the key, check the producer's proof, receive and check
//! the descriptor.

use std::fs::File;
use std::io::{ErrorKind, Read};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use rustix::io::Errno;

use super::frame::{self, Kind};
use super::server::REQUIRED_SEALS;
use crate::Error;

fn failed(why: impl Into<String>) -> Error {
    Error::AttachFailed { why: why.into() }
}

fn io_failed(what: &str, e: &std::io::Error) -> Error {
    match e.kind() {
        ErrorKind::WouldBlock | ErrorKind::TimedOut => {
            failed(format!("timed out waiting for the producer's {what}"))
        }
        ErrorKind::UnexpectedEof => failed(format!(
            "the producer closed the connection before its {what}"
        )),
        _ => failed(format!("{what}: {e}")),
    }
}

fn arm(stream: &UnixStream, deadline: Instant) -> Result<(), Error> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left < Duration::from_millis(1) {
        return Err(failed("handshake timed out"));
    }
    stream
        .set_read_timeout(Some(left))
        .and_then(|()| stream.set_write_timeout(Some(left)))
        .map_err(|e| failed(format!("setsockopt: {e}")))
}

/// A REFUSE frame's payload as the error it means.
fn refused(p: &[u8]) -> Error {
    Error::AttachRefused {
        why: frame::Refusal::text(p[0]).to_owned(),
    }
}

/// Connects to `path` (checked first: a socket in a directory group and other cannot write),
/// runs the handshake within `timeout` and returns the received descriptor, checked to be a
/// sealed memfd. `NotFound` / `ConnectionRefused` come back as [`Error::NotFound`] (nothing
/// serves there yet).
pub(crate) fn fetch_block_fd(
    path: &Path,
    key: &[u8; 32],
    timeout: Duration,
) -> Result<File, Error> {
    super::check_consumer_path(path)?;
    let shown = crate::error::clip(&path.display().to_string());
    let deadline = Instant::now() + timeout;
    let stream = match UnixStream::connect(path) {
        Ok(s) => s,
        Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::ConnectionRefused) => {
            return Err(Error::NotFound { name: shown });
        }
        Err(e) => return Err(crate::segment::io_err("connect", &shown, e)),
    };
    let (producer_pid, _, _) =
        super::peer_cred(&stream).map_err(|e| failed(format!("SO_PEERCRED: {e}")))?;
    if producer_pid == 0 {
        return Err(Error::AttachRefused {
            why: "the producer is in another pid namespace (pid 0)".into(),
        });
    }
    let my_pid = std::process::id();
    let nonce_c = frame::nonce().map_err(|e| failed(format!("getrandom: {e}")))?;
    arm(&stream, deadline)?;
    // A producer that refuses our credentials answers REFUSE without reading: a failed send
    // is judged by what it sent.
    let sent = frame::send_all(&stream, &frame::encode(Kind::Hello, &nonce_c));
    arm(&stream, deadline)?;
    let mut r: &UnixStream = &stream;
    let nonce_p = match frame::read_frame(&mut r) {
        Ok((Kind::Challenge, p)) => p,
        Ok((Kind::Refuse, p)) => return Err(refused(&p)),
        Ok((k, _)) => return Err(failed(format!("expected CHALLENGE, got {k:?}"))),
        Err(Ok(why)) => return Err(failed(why)),
        Err(Err(e)) => {
            return Err(match sent {
                Err(s) => failed(format!("sending HELLO: {s}")),
                Ok(()) => io_failed("CHALLENGE", &e),
            });
        }
    };
    sent.map_err(|e| failed(format!("sending HELLO: {e}")))?;
    let proof = frame::mac_bytes(frame::mac(
        key,
        frame::LABEL_CONSUMER,
        &nonce_c,
        &nonce_p,
        my_pid,
        producer_pid,
    ));
    arm(&stream, deadline)?;
    frame::send_all(&stream, &frame::encode(Kind::Proof, &proof))
        .map_err(|e| failed(format!("sending PROOF: {e}")))?;
    arm(&stream, deadline)?;
    let (kind, payload, fd) = recv_frame_with_fd(&stream)?;
    match kind {
        Kind::Accept => {}
        Kind::Refuse => return Err(refused(&payload)),
        k => return Err(failed(format!("expected ACCEPT, got {k:?}"))),
    }
    let expected = frame::mac(
        key,
        frame::LABEL_PRODUCER,
        &nonce_c,
        &nonce_p,
        my_pid,
        producer_pid,
    );
    if !frame::mac_ok(expected, &payload[..frame::NONCE_LEN]) {
        return Err(Error::AttachRefused {
            why: "the producer did not prove it holds the key".into(),
        });
    }
    let fd = fd.ok_or_else(|| failed("ACCEPT came without a descriptor"))?;
    check_sealed(&fd)?;
    Ok(File::from(fd))
}

/// [`Error::NotSealed`] unless `fd` carries at least [`REQUIRED_SEALS`] (a file that cannot
/// carry seals, not a memfd, reports 0).
pub(crate) fn check_sealed(fd: &OwnedFd) -> Result<(), Error> {
    let seals = match rustix::fs::fcntl_get_seals(fd) {
        Ok(s) => s,
        Err(Errno::INVAL) => rustix::fs::SealFlags::empty(),
        Err(e) => return Err(failed(format!("F_GET_SEALS: {e}"))),
    };
    if seals.contains(REQUIRED_SEALS) {
        Ok(())
    } else {
        Err(Error::NotSealed {
            seals: seals.bits(),
        })
    }
}

/// Receives one frame whose first byte may carry descriptors (`SCM_RIGHTS`, close-on-exec):
/// the frame, and the first descriptor (any others are closed).
fn recv_frame_with_fd(
    stream: &UnixStream,
) -> Result<(Kind, [u8; frame::MAX_PAYLOAD], Option<OwnedFd>), Error> {
    use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags};
    let mut buf = [0u8; frame::MAX_FRAME];
    let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(4))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let got = loop {
        match rustix::net::recvmsg(
            stream,
            &mut [std::io::IoSliceMut::new(&mut buf)],
            &mut control,
            RecvFlags::CMSG_CLOEXEC,
        ) {
            Ok(m) => break m.bytes,
            Err(Errno::INTR) => {}
            Err(e) => return Err(io_failed("ACCEPT", &e.into())),
        }
    };
    let mut fd = None;
    for msg in control.drain() {
        if let RecvAncillaryMessage::ScmRights(fds) = msg {
            for f in fds {
                if fd.is_none() {
                    fd = Some(f);
                }
            }
        }
    }
    if got == 0 {
        return Err(failed(
            "the producer closed the connection before its ACCEPT",
        ));
    }
    let mut have = got;
    let mut r: &UnixStream = stream;
    // The header first, then exactly the payload the header announces.
    while have < frame::HEADER_LEN {
        let n = r
            .read(&mut buf[have..frame::HEADER_LEN])
            .map_err(|e| io_failed("ACCEPT", &e))?;
        if n == 0 {
            return Err(failed("the producer closed the connection inside a frame"));
        }
        have += n;
    }
    let header: [u8; frame::HEADER_LEN] = buf[..frame::HEADER_LEN].try_into().expect("8 bytes");
    let (kind, len) = frame::check_header(&header).map_err(failed)?;
    let end = frame::HEADER_LEN + len;
    if have > end {
        return Err(failed("the producer sent bytes after its last frame"));
    }
    r.read_exact(&mut buf[have..end])
        .map_err(|e| io_failed("ACCEPT", &e))?;
    let mut p = [0u8; frame::MAX_PAYLOAD];
    p[..len].copy_from_slice(&buf[frame::HEADER_LEN..end]);
    Ok((kind, p, fd))
}
