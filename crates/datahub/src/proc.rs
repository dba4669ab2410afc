//! Process identity and liveness, from `/proc`.
//!
//! A peer is identified by its pid **and** its start time (field 22 of `/proc/PID/stat`, clock
//! ticks since boot; see proc(5)), so a pid reused by a new process is not mistaken for the peer
//! that registered. A process is dead when `/proc/PID/stat` is missing, when its state is `Z`
//! (zombie: exited, not yet reaped) or `X`, or when its start time differs from the registered
//! one.

use std::sync::OnceLock;

/// Liveness of a registered peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum Liveness {
    /// The process exists, runs (or sleeps), and started at the registered time.
    Alive,
    /// The process is gone, a zombie, or the pid now belongs to another process.
    Dead,
}

/// State character and start time of `pid`, or `None` when `/proc/PID/stat` cannot be read.
pub(crate) fn stat(pid: u32) -> Option<(char, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&text)
}

/// Parses the state (field 3) and start time (field 22) out of a `/proc/PID/stat` line. The
/// command name (field 2) is in parentheses and may itself contain spaces and parentheses, so
/// fields are counted from the last `)`.
pub(crate) fn parse_stat(text: &str) -> Option<(char, u64)> {
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_ascii_whitespace();
    let state = fields.next()?.chars().next()?;
    // Field 3 was `state`; field 22 (`starttime`) is 19 further on.
    let start = fields.nth(18)?.parse().ok()?;
    Some((state, start))
}

/// Liveness of the process `pid` that registered with `start_time`. Pid 0 is never alive.
pub fn liveness(pid: u32, start_time: u64) -> Liveness {
    if pid == 0 {
        return Liveness::Dead;
    }
    match stat(pid) {
        Some((state, start)) if start == start_time && state != 'Z' && state != 'X' => {
            Liveness::Alive
        }
        _ => Liveness::Dead,
    }
}

/// Whether thread `tid` of process `pid` still exists (`/proc/PID/task/TID`).
pub(crate) fn thread_exists(pid: u32, tid: u32) -> bool {
    std::fs::metadata(format!("/proc/{pid}/task/{tid}")).is_ok()
}

/// This process's pid and start time (read once).
pub(crate) fn me() -> (u32, u64) {
    static ME: OnceLock<(u32, u64)> = OnceLock::new();
    *ME.get_or_init(|| {
        let pid = rustix::process::getpid().as_raw_nonzero().get() as u32;
        let start = stat(pid).map_or(0, |(_, s)| s);
        (pid, start)
    })
}

/// This thread's id.
pub(crate) fn tid() -> u32 {
    rustix::thread::gettid().as_raw_nonzero().get() as u32
}

/// `CLOCK_MONOTONIC` in nanoseconds. The clock is system-wide, so values written by one process
/// are comparable with another's.
pub(crate) fn monotonic_ns() -> u64 {
    let ts = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Wall-clock nanoseconds since the Unix epoch (for timestamps shown to people).
pub(crate) fn unix_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_comm_with_parens_and_spaces() {
        let line =
            "1234 (a) b (c)) S 1 1234 1234 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 10";
        assert_eq!(parse_stat(line), Some(('S', 987654)));
        assert_eq!(parse_stat("garbage"), None);
        assert_eq!(parse_stat("1 (x) S 1 2"), None);
    }

    #[test]
    fn self_is_alive_and_wrong_start_is_dead() {
        let (pid, start) = me();
        assert_ne!(start, 0);
        assert_eq!(liveness(pid, start), Liveness::Alive);
        assert_eq!(liveness(pid, start + 1), Liveness::Dead);
        assert_eq!(liveness(0, 0), Liveness::Dead);
        assert!(thread_exists(pid, tid()));
    }

    #[test]
    fn exited_child_is_dead_even_unreaped() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        let start = stat(pid).map(|(_, s)| s);
        // Give it time to exit; it stays a zombie until waited for.
        std::thread::sleep(std::time::Duration::from_millis(100));
        if let Some(start) = start {
            assert_eq!(liveness(pid, start), Liveness::Dead);
        }
        child.wait().unwrap();
    }
}
