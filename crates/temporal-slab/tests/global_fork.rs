//! `fork` in a process whose global allocator is `EpochGlobal`, while other threads allocate,
//! take the allocator's locks (stats, epoch advance and close) and free: every forked child
//! allocates, frees, takes every lock itself and exits 0.
//!
//! The forking runs in a child process of the test (this binary re-run for its `#[ignore]`d
//! entry point `child_fork_worker`), so a deadlocked grandchild is killed and reported instead
//! of hanging the test run; every wait has a timeout.

use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use temporal_slab::global::{self, EpochGlobal};

#[global_allocator]
static GLOBAL: EpochGlobal = EpochGlobal::new();

const FORKS: usize = 60;
/// How long one forked child may take (it does a few thousand allocations).
const CHILD_TIMEOUT: Duration = Duration::from_secs(20);
/// How long the whole worker process may take.
const WORKER_TIMEOUT: Duration = Duration::from_secs(300);

#[test]
fn forked_children_allocate_and_free_while_other_threads_hold_the_allocator_busy() {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_fork_worker",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        // The worker's own test-harness lines are not this run's results; its panics (stderr)
        // still show.
        .stdout(Stdio::null())
        .process_group(0) // so a timeout kills the worker and any forked child it left
        .spawn()
        .expect("re-run this test binary");
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > WORKER_TIMEOUT {
            // SAFETY: signals the worker's own process group (made for it above).
            unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
            let _ = child.wait();
            panic!("the fork worker did not finish in {WORKER_TIMEOUT:?}: a forked child hung");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "fork worker failed: {status}");
}

/// Runs in the worker process: busy threads, then `FORKS` forks, each child checked.
#[test]
#[ignore = "re-exec entry point: runs only in a child process the parent test spawns"]
fn child_fork_worker() {
    let slab = global::instance().expect("the global allocator");
    let steady = slab.epoch_advance().unwrap();
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        // Allocates and frees in a scope, in a loop (fast and slow paths, shard locks).
        s.spawn(|| {
            let _held = slab.enter(steady).unwrap(); // keeps `steady` open across advances
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                global::scope(steady, || {
                    let v: Vec<String> = (0..200).map(|i| format!("item {i} {n}")).collect();
                    let b: Vec<Box<[u8; 300]>> = (0..50).map(|_| Box::new([1; 300])).collect();
                    assert_eq!(v.len() + b.len(), 250);
                });
                n += 1;
            }
        });
        // Takes every lock over and over: stats (all shard locks, labels, grow), advance and
        // close (next_era, shard and class locks), allocation into fresh epochs (carving).
        s.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                let snap = slab.stats();
                assert!(!snap.classes.is_empty());
                if let Ok(e) = slab.epoch_advance() {
                    let _ = slab.set_label(e, "churn");
                    let v = global::scope(e, || vec![vec![0u8; 100]; 100]);
                    drop(v);
                    let _ = slab.epoch_close(e);
                }
            }
        });
        let mut failure = None;
        for round in 0..FORKS {
            std::thread::sleep(Duration::from_millis(2));
            if let Err(e) = fork_and_check(round) {
                failure = Some(format!("fork {round} of {FORKS}: {e}"));
                break;
            }
        }
        stop.store(true, Ordering::Relaxed);
        if let Some(failure) = failure {
            panic!("{failure}");
        }
    });
}

/// Forks; the child runs [`child_body`] and `_exit`s with its result; the parent waits with
/// a timeout (killing the child when it expires).
fn fork_and_check(round: usize) -> Result<(), String> {
    // SAFETY: the child only runs `child_body` (allocation through the global allocator, which
    // the fork handlers keep usable, and the slab's own calls) and then `_exit`s, never
    // returning into the test harness; the parent only waits for it.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(format!("fork failed: {}", std::io::Error::last_os_error()));
    }
    if pid == 0 {
        // SAFETY: prctl with PR_SET_PDEATHSIG only sets this process's parent-death signal:
        // if the worker dies, so does this child, instead of hanging on as an orphan.
        unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
        let code = match std::panic::catch_unwind(|| child_body(round)) {
            Ok(true) => 0,
            _ => 1,
        };
        // SAFETY: `_exit` ends the child without running the parent's atexit handlers or
        // destructors.
        unsafe { libc::_exit(code) };
    }
    let start = Instant::now();
    loop {
        let mut status = 0;
        // SAFETY: waits for our own child; `status` is a valid out pointer.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if r == pid {
            return if libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0 {
                Ok(())
            } else {
                Err(format!("child exited with status {status:#x}"))
            };
        }
        if r < 0 {
            return Err(format!("waitpid: {}", std::io::Error::last_os_error()));
        }
        if start.elapsed() > CHILD_TIMEOUT {
            // SAFETY: kills and reaps our own child.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, &mut status, 0);
            }
            return Err(format!(
                "child hung for {CHILD_TIMEOUT:?} (a lock held across fork?)"
            ));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// In the forked child: allocate and free in a scope and outside, and take every allocator
/// lock (stats, advance, label, close). Never prints (another thread may have held stdout's
/// lock at the fork).
fn child_body(round: usize) -> bool {
    let slab = global::instance().expect("inherited");
    let Ok(e) = slab.epoch_advance() else {
        return false;
    };
    if slab.set_label(e, "child").is_err() {
        return false;
    }
    let ok = global::scope(e, || {
        let v: Vec<String> = (0..2000).map(|i| format!("{round}:{i}")).collect();
        let boxes: Vec<Box<[u64; 90]>> = (0..500).map(|i| Box::new([i; 90])).collect();
        v.iter()
            .enumerate()
            .all(|(i, s)| *s == format!("{round}:{i}"))
            && boxes.iter().enumerate().all(|(i, b)| b[89] == i as u64)
            && global::owns(v[0].as_ptr())
    });
    let outside: Vec<u32> = (0..10_000).collect();
    let snap = slab.stats();
    let live_in_child_epoch = snap
        .epochs
        .iter()
        .find(|s| s.epoch_id as usize == e.index() && s.epoch_era == e.era())
        .map(|s| s.live_objects);
    ok && outside.len() == 10_000 && live_in_child_epoch == Some(0) && slab.epoch_close(e).is_ok()
}
