//! Our own C programs on the library, and the environment it reads.
//!
//! - `tests/c/threads.c` (links nothing of ours) runs with and without the preload: six
//!   threads allocating with every function, freeing across threads, checking contents; the
//!   output must be identical and the stats must show the slab served it.
//! - `tests/c/containers.cpp` (links nothing of ours): four threads of `std::map`,
//!   `std::unordered_map`, `std::string`, `shared_ptr` and an `alignas(64)` type, maps destroyed
//!   on other threads; identical output, served by the slab.
//! - `tests/c/epochs.c` includes `tslab.h` and links `-ltslab_malloc`: epochs, scopes, labels,
//!   every error code, the stats JSON into a buffer; the JSON must parse as `tslab` parses it
//!   and show the labelled epoch's live objects.
//! - `tests/c/fork.c` (links nothing of ours) forks 40 times while three threads allocate;
//!   every child allocates and frees at once and exits 0 (a deadlocked child dies of its
//!   `alarm`); built with `-DTSLAB_EPOCHS` and linked, a further thread advances and closes
//!   epochs and reads the stats meanwhile (each takes allocator locks), so forks often land
//!   while one is held.
//! - `tests/c/misuse.c`: a double free is counted (`pointer_errors`) and the program goes on;
//!   a `realloc` of a freed slab object aborts with one line on stderr.
//! - `TSLAB_DISABLE=1` and `TSLAB_STATS_FILE` pointing at a symbolic link.

mod support;

use std::ffi::OsStr;
use std::process::Command;

use support::{Stats, compile, compile_c, library, preloaded, run, same_with_and_without};

#[test]
fn threaded_c_program_is_identical_under_the_preload_and_served_by_the_slab() {
    let dir = tempfile::tempdir().unwrap();
    let exe = compile_c("threads", dir.path(), &[]);
    let stats = same_with_and_without(
        || {
            let mut cmd = Command::new(&exe);
            cmd.arg("20000");
            cmd
        },
        dir.path(),
        "threads",
    );
    stats.assert_served("threads");
    // Six threads x 20,000 rounds, about five in eight of them slab-sized.
    assert!(
        stats.snapshot.total_allocs > 50_000,
        "only {} slab allocations",
        stats.snapshot.total_allocs
    );
}

/// `tests/c/<name>.c` compiled against `include/tslab.h` and linked with `-ltslab_malloc`
/// (found through an rpath), in `dir`, with `extra` compiler arguments.
fn compile_linked(name: &str, dir: &std::path::Path, extra: &[&OsStr]) -> std::path::PathBuf {
    let lib = library();
    let lib_dir = lib.parent().unwrap();
    let include = concat!(env!("CARGO_MANIFEST_DIR"), "/include");
    let mut rpath = std::ffi::OsString::from("-Wl,-rpath,");
    rpath.push(lib_dir);
    let mut libdir = std::ffi::OsString::from("-L");
    libdir.push(lib_dir);
    let mut args = vec![
        OsStr::new("-I"),
        OsStr::new(include),
        &libdir,
        &rpath,
        OsStr::new("-ltslab_malloc"),
    ];
    args.extend_from_slice(extra);
    compile_c(name, dir, &args)
}

#[test]
fn threaded_cpp_containers_are_identical_under_the_preload_and_served_by_the_slab() {
    let dir = tempfile::tempdir().unwrap();
    let exe = compile(
        "c++",
        "containers.cpp",
        "containers",
        dir.path(),
        &[OsStr::new("-std=c++17")],
    );
    let stats = same_with_and_without(|| Command::new(&exe), dir.path(), "containers");
    stats.assert_served("containers");
}

#[test]
fn epochs_from_c_keep_live_objects_past_close_and_report_them_by_label() {
    let dir = tempfile::tempdir().unwrap();
    let exe = compile_linked("epochs", dir.path(), &[]);
    let json = dir.path().join("epochs.json");
    let mut cmd = Command::new(&exe);
    cmd.arg(&json);
    let out = run(cmd, dir.path(), "epochs").success("epochs");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "kept=40 freed=60 thread_kept=10\n"
    );
    let stats = Stats::read(&json);
    stats.assert_served("epochs");
    let epochs = stats.snapshot.epochs();
    let request = epochs
        .iter()
        .find(|e| e.label == "c-request")
        .unwrap_or_else(|| panic!("no epoch labelled c-request in {epochs:?}"));
    assert_eq!(request.state.as_str(), "CLOSING");
    assert_eq!(
        request.live_objects, 50,
        "40 kept by the main thread and 10 by the other one"
    );
    let background = epochs
        .iter()
        .find(|e| e.label == "c-background")
        .expect("the epoch opened second");
    assert_eq!(background.state.as_str(), "ACTIVE");
    assert_eq!(
        stats.snapshot.current_epoch, background.epoch_id,
        "tslab_epoch_advance made it current"
    );
    assert!(
        background.live_objects > 0,
        "the object allocated outside every scope is in the current epoch"
    );
}

#[test]
fn fork_while_other_threads_allocate_leaves_every_child_able_to_allocate() {
    let dir = tempfile::tempdir().unwrap();
    let exe = compile_c("fork", dir.path(), &[]);
    let stats = same_with_and_without(|| Command::new(&exe), dir.path(), "fork");
    stats.assert_served("fork");
}

#[test]
fn fork_while_another_thread_advances_and_closes_epochs_leaves_every_child_able_to_allocate() {
    let dir = tempfile::tempdir().unwrap();
    let exe = compile_linked("fork", dir.path(), &[OsStr::new("-DTSLAB_EPOCHS")]);
    let out = run(Command::new(&exe), dir.path(), "fork-epochs").success("fork with epochs");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "forks=40 children_ok=40\n"
    );
}

#[test]
fn double_free_of_a_slab_object_is_counted_and_the_program_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let exe = compile_c("misuse", dir.path(), &[OsStr::new("-w")]);
    let stats_path = dir.path().join("stats.json");
    let mut cmd = Command::new(&exe);
    cmd.arg("double-free");
    let out = run(preloaded(cmd, &stats_path), dir.path(), "double-free").success("double free");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "survived\n");
    assert_eq!(Stats::read(&stats_path).snapshot.pointer_errors, 1);
}

#[test]
fn realloc_of_a_freed_slab_object_aborts_with_one_line() {
    use std::os::unix::process::ExitStatusExt;
    let dir = tempfile::tempdir().unwrap();
    let exe = compile_c("misuse", dir.path(), &[OsStr::new("-w")]);
    let mut cmd = Command::new(&exe);
    cmd.arg("realloc-freed");
    let out = run(
        preloaded(cmd, &dir.path().join("stats.json")),
        dir.path(),
        "realloc-freed",
    );
    assert_eq!(out.status.signal(), Some(libc::SIGABRT), "{:?}", out);
    assert!(out.stdout.is_empty(), "realloc returned");
    let lines: Vec<&str> = out.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{}", out.stderr);
    assert!(
        lines[0].starts_with("tslab_malloc: realloc(): invalid pointer 0x"),
        "{}",
        lines[0]
    );
}

#[test]
fn disabled_preload_passes_everything_to_glibc_and_writes_no_stats() {
    let dir = tempfile::tempdir().unwrap();
    let exe = compile_c("threads", dir.path(), &[]);
    let stats = dir.path().join("stats.json");
    let mut cmd = Command::new(&exe);
    cmd.arg("2000");
    let mut cmd = preloaded(cmd, &stats);
    cmd.env("TSLAB_DISABLE", "1");
    let out = run(cmd, dir.path(), "disabled").success("threads with TSLAB_DISABLE=1");
    assert!(!out.stdout.is_empty());
    assert!(
        !stats.exists(),
        "TSLAB_DISABLE=1 created the allocator and wrote its stats"
    );
    // The program that checks `tslab_enabled()` first stops there.
    let mut cmd = Command::new(compile_linked("epochs", dir.path(), &[]));
    cmd.arg(dir.path().join("epochs.json"))
        .env("TSLAB_DISABLE", "1");
    let out = run(cmd, dir.path(), "disabled-epochs");
    assert_eq!(out.status.code(), Some(1), "stderr:\n{}", out.stderr);
    assert_eq!(out.stderr, "epochs: tslab_enabled (got 0)\n");
}

#[test]
fn stats_file_through_a_symbolic_link_is_refused_with_one_line_and_the_program_succeeds() {
    let dir = tempfile::tempdir().unwrap();
    let exe = compile_c("threads", dir.path(), &[]);
    let target = dir.path().join("precious.txt");
    std::fs::write(&target, "keep me\n").unwrap();
    let link = dir.path().join("stats.json");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let mut cmd = Command::new(&exe);
    cmd.arg("2000");
    let out = run(preloaded(cmd, &link), dir.path(), "symlink").success("threads");
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep me\n");
    let complaints: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| l.starts_with("tslab_malloc: "))
        .collect();
    assert_eq!(complaints.len(), 1, "stderr:\n{}", out.stderr);
    assert!(
        complaints[0].contains("cannot write the stats to") && complaints[0].contains("stats.json"),
        "{}",
        complaints[0]
    );
}
