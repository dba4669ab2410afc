//! What the preload tests share: finding `libtslab_malloc.so`, running a program with and
//! without it under a timeout, compiling the C programs, reading the stats file, finding the
//! shared data.
//!
//! The library: cargo does not build a cdylib-only package's library for its integration
//! tests (there is no rlib for them to link), so [`library`] runs `cargo build -p
//! temporal-slab-malloc --lib` itself, once per test binary, with the test binary's profile;
//! the target directory is the one this run uses (`CARGO_TARGET_DIR` is inherited). A fresh
//! library makes that a no-op. The result is `<target>/<profile>/libtslab_malloc.so`, the
//! directory that holds this test binary's `deps/`.

#![allow(dead_code)] // each test file uses its own subset

use std::ffi::OsStr;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Longest any one program may run (a debug build of the library under a debug-built test;
/// a noisy 2-core machine).
pub const TIMEOUT: Duration = Duration::from_secs(300);

/// `<target>/<profile>/libtslab_malloc.so`, next to the `deps/` directory of this test binary,
/// built (or found fresh) by `cargo build` on the first call.
pub fn library() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(build_library).clone()
}

fn build_library() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let profile_dir = exe
        .ancestors()
        .find(|d| d.file_name() == Some(OsStr::new("deps")))
        .and_then(Path::parent)
        .unwrap_or_else(|| panic!("{} is not in a <target>/<profile>/deps/", exe.display()))
        .to_path_buf();
    let target_dir = profile_dir.parent().unwrap();
    let mut cargo = Command::new(env!("CARGO"));
    cargo
        .args(["build", "--quiet", "-p", "temporal-slab-malloc", "--lib"])
        .arg("--target-dir")
        .arg(target_dir)
        .current_dir(env!("CARGO_MANIFEST_DIR"));
    match profile_dir.file_name().and_then(OsStr::to_str) {
        Some("debug") => {}
        Some("release") => {
            cargo.arg("--release");
        }
        Some(other) => {
            cargo.args(["--profile", other]);
        }
        None => panic!("no profile directory in {}", profile_dir.display()),
    }
    let logs = tempfile::tempdir().unwrap();
    let built = run(cargo, logs.path(), "cargo-build");
    assert!(
        built.status.success(),
        "cargo build -p temporal-slab-malloc: {}\n{}",
        built.status,
        built.stderr
    );
    let lib = profile_dir.join("libtslab_malloc.so");
    assert!(lib.is_file(), "cargo build made no {}", lib.display());
    lib
}

/// What a finished program did.
#[derive(Debug)]
pub struct Run {
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: String,
}

impl Run {
    /// Panics with the program's stderr unless it exited with 0.
    pub fn success(self, what: &str) -> Run {
        assert!(
            self.status.success(),
            "{what}: {}\nstderr:\n{}",
            self.status,
            self.stderr
        );
        self
    }
}

/// Runs `cmd` with stdout and stderr to files in `dir` (no pipe to fill up), killing it and
/// failing after [`TIMEOUT`].
pub fn run(mut cmd: Command, dir: &Path, what: &str) -> Run {
    let out_path = dir.join(format!("{what}.stdout"));
    let err_path = dir.join(format!("{what}.stderr"));
    cmd.stdin(Stdio::null())
        .stdout(File::create(&out_path).unwrap())
        .stderr(File::create(&err_path).unwrap());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("{what}: cannot start {cmd:?}: {e}"));
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{what}: still running after {TIMEOUT:?}, killed\nstderr:\n{}",
                std::fs::read_to_string(&err_path).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Run {
        status,
        stdout: std::fs::read(&out_path).unwrap(),
        stderr: String::from_utf8_lossy(&std::fs::read(&err_path).unwrap()).into_owned(),
    }
}

/// `cmd` with the library preloaded and the stats written to `stats` at exit.
pub fn preloaded(mut cmd: Command, stats: &Path) -> Command {
    cmd.env("LD_PRELOAD", library())
        .env("TSLAB_STATS_FILE", stats);
    cmd
}

/// Runs `make()` once plainly and once preloaded (stats to `dir/<what>.stats.json`), checks
/// both succeed with byte-identical stdout, and returns the preloaded run's parsed stats.
pub fn same_with_and_without(make: impl Fn() -> Command, dir: &Path, what: &str) -> Stats {
    let plain = run(make(), dir, &format!("{what}.plain")).success(&format!("{what} (plain)"));
    let stats_path = dir.join(format!("{what}.stats.json"));
    let pre = run(
        preloaded(make(), &stats_path),
        dir,
        &format!("{what}.preloaded"),
    )
    .success(&format!("{what} (preloaded)"));
    assert!(!plain.stdout.is_empty(), "{what}: printed nothing");
    assert!(
        plain.stdout == pre.stdout,
        "{what}: output differs under the preload ({} vs {} bytes)",
        plain.stdout.len(),
        pre.stdout.len()
    );
    assert!(
        !pre.stderr.contains("tslab_malloc:"),
        "{what}: the library complained:\n{}",
        pre.stderr
    );
    Stats::read(&stats_path)
}

/// A stats file the library wrote, parsed the way `tslab` parses it.
#[derive(Debug)]
pub struct Stats {
    pub json: serde_json::Value,
    pub snapshot: tslab::Snapshot,
}

impl Stats {
    pub fn read(path: &Path) -> Stats {
        let text = std::fs::read_to_string(path)
            .unwrap_or_else(|e| panic!("no stats file at {}: {e}", path.display()));
        let snapshot = tslab::Snapshot::from_json(&text, &path.display().to_string())
            .unwrap_or_else(|e| panic!("{e}"));
        Stats {
            json: serde_json::from_str(&text).unwrap(),
            snapshot,
        }
    }

    /// Checks the slab served allocations and frees and no free reached it with a bad pointer.
    pub fn assert_served(&self, what: &str) {
        let s = &self.snapshot;
        assert!(
            s.total_allocs > 0 && s.total_frees > 0,
            "{what}: the slab served {} allocations and {} frees: the preload passed everything through",
            s.total_allocs,
            s.total_frees
        );
        assert_eq!(
            s.pointer_errors, 0,
            "{what}: frees of pointers the slab does not own"
        );
    }
}

/// Compiles `tests/c/<name>.c` to `dir/<name>` with `cc -O2 -pthread` and `extra` arguments.
pub fn compile_c(name: &str, dir: &Path, extra: &[&OsStr]) -> PathBuf {
    compile("cc", &format!("{name}.c"), name, dir, extra)
}

/// Compiles `tests/c/<source>` to `dir/<name>` with `<compiler> -O2 -Wall -pthread`.
pub fn compile(compiler: &str, source: &str, name: &str, dir: &Path, extra: &[&OsStr]) -> PathBuf {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let src = crate_dir.join("tests/c").join(source);
    let out = dir.join(name);
    let mut cc = Command::new(compiler);
    cc.args(["-O2", "-pthread", "-Wall", "-o"])
        .arg(&out)
        .arg(&src)
        .args(extra);
    let run = run(cc, dir, &format!("{compiler}-{name}"));
    assert!(
        run.status.success(),
        "{compiler} {}: {}\n{}",
        src.display(),
        run.status,
        run.stderr
    );
    out
}

/// `$SHARED_DATA_DIR/<sub>`, else `../shared/data/<sub>` beside the workspace root; `None`
/// (the test skips) when missing, a panic when `REQUIRE_SHARED_DATA=1`.
pub fn shared_data(sub: &str) -> Option<PathBuf> {
    let dir = match std::env::var_os("SHARED_DATA_DIR") {
        Some(d) => PathBuf::from(d),
        // The workspace root is two levels up from this crate; the data sits beside the root.
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data"),
    };
    let dir = dir.join(sub);
    if dir.is_dir() {
        return Some(dir);
    }
    if std::env::var("REQUIRE_SHARED_DATA").as_deref() == Ok("1") {
        panic!("REQUIRE_SHARED_DATA=1 but {} is missing", dir.display());
    }
    eprintln!(
        "skipped: no shared data at {} (set SHARED_DATA_DIR)",
        dir.display()
    );
    None
}

/// The files of `dir` whose names end with `suffix`, sorted.
pub fn files(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(suffix))
        .collect();
    v.sort();
    assert!(!v.is_empty(), "no *{suffix} in {}", dir.display());
    v
}

/// The interpreter `python3` resolves to (not a shell shim in front of it), or `None` with a
/// message when there is no python3 (a panic under `REQUIRE_SHARED_DATA=1`, as on CI).
pub fn python3() -> Option<PathBuf> {
    let mut cmd = Command::new("python3");
    cmd.args(["-c", "import sys; print(sys.executable)"]);
    let ok = cmd.output().ok().filter(|o| o.status.success());
    let Some(out) = ok else {
        if std::env::var("REQUIRE_SHARED_DATA").as_deref() == Ok("1") {
            panic!("REQUIRE_SHARED_DATA=1 but python3 does not run");
        }
        eprintln!("skipped: no python3");
        return None;
    };
    let path = String::from_utf8(out.stdout).unwrap();
    Some(PathBuf::from(path.trim()))
}
