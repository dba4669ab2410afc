//! `Config::huge_pages`: the fallback chain on the machine's own settings, the allowed path
//! through a fake `transparent_hugepage` directory (`DATAHUB_THP_SYSFS_DIR`, set in a child
//! process so no test changes this process's environment), and the backing in the header.

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use datahub::{
    Backing, Config, Consumer, Error, Expectations, HugePages, Inspector, Policy, Producer,
    THP_SYSFS_DIR, THP_SYSFS_ENV,
};

const T: Duration = Duration::from_secs(5);

fn name(tag: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "dh-huge-{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Whether this machine's settings rule shmem THP out for `/dev/shm` the way CI's do:
/// `shmem_enabled` is `[never]` and `/dev/shm` has no `huge=` mount option.
fn machine_has_no_shm_thp() -> bool {
    std::env::var_os(THP_SYSFS_ENV).is_none() && machine_has_real_settings_without_shm_thp()
}

/// Like [`machine_has_no_shm_thp`], from the real sysfs whatever the environment says.
fn machine_has_real_settings_without_shm_thp() -> bool {
    let shmem =
        std::fs::read_to_string(Path::new(THP_SYSFS_DIR).join("shmem_enabled")).unwrap_or_default();
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let shm_huge = mounts
        .lines()
        .filter(|l| l.split(' ').nth(4) == Some("/dev/shm"))
        .any(|l| l.contains("huge=") && !l.contains("huge=never"));
    shmem.contains("[never]") && !shm_huge && std::env::var_os("DATAHUB_SHM_DIR").is_none()
}

#[test]
fn try_falls_back_to_small_pages_and_says_why() {
    let n = name("try");
    let p = Producer::create(
        &n,
        Config::new(Policy::Sequential).huge_pages(HugePages::Try),
    )
    .unwrap();
    let h = p.huge_pages();
    assert_eq!(h.requested, HugePages::Try);
    if machine_has_no_shm_thp() {
        assert_eq!(h.backing, Backing::Small, "{h:?}");
        assert!(h.reason.contains("shmem_enabled is [never]"), "{h:?}");
        assert!(h.reason.contains("without huge="), "{h:?}");
        // No rounding when huge pages are not attempted.
        let len = std::fs::metadata(format!("/dev/shm/{n}")).unwrap().len();
        assert_eq!(len, Inspector::open(&n).unwrap().info().regions.total_size);
    } else {
        assert!(!h.reason.is_empty(), "{h:?}");
    }
    assert_eq!(Inspector::open(&n).unwrap().info().backing, h.backing);
}

#[test]
fn require_fails_with_a_typed_error_naming_shmem_enabled_and_creates_nothing() {
    if !machine_has_no_shm_thp() {
        eprintln!("this machine may allow shmem THP; the CI assertion does not apply");
        return;
    }
    let n = name("req");
    match Producer::create(
        &n,
        Config::new(Policy::Sequential).huge_pages(HugePages::Require),
    ) {
        Err(Error::HugePagesUnavailable { why }) => {
            assert_eq!(
                why,
                "shmem_enabled is [never] and /dev/shm is mounted without huge="
            );
            let e = Error::HugePagesUnavailable { why };
            assert!(!e.to_string().contains('\n'));
        }
        other => panic!("expected HugePagesUnavailable, got {other:?}"),
    }
    assert!(!Path::new(&format!("/dev/shm/{n}")).exists());
}

#[test]
fn off_is_the_default_and_records_small_pages() {
    let n = name("off");
    let p = Producer::create(&n, Config::new(Policy::Latest)).unwrap();
    assert_eq!(p.huge_pages().requested, HugePages::Off);
    assert_eq!(p.huge_pages().backing, Backing::Small);
    let c = Consumer::attach(&n, Expectations::new()).unwrap();
    drop(c);
    let info = Inspector::open(&n).unwrap().info();
    assert_eq!(info.backing, Backing::Small);
    assert_eq!(info.version, "1.2");
}

#[test]
fn a_block_whose_backing_field_is_zero_reads_as_unknown() {
    let n = name("old");
    let _p = Producer::create(&n, Config::new(Policy::Latest)).unwrap();
    // A 1.0 producer leaves bytes 1152..1156 zero: emulate one by clearing the field.
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(format!("/dev/shm/{n}"))
        .unwrap();
    f.write_all_at(&[0; 4], 1152).unwrap();
    assert_eq!(
        Inspector::open(&n).unwrap().info().backing,
        Backing::Unknown
    );
    // And a code this build does not know reads as unknown too, without failing the open.
    f.write_all_at(&77u32.to_le_bytes(), 1152).unwrap();
    assert_eq!(
        Inspector::open(&n).unwrap().info().backing,
        Backing::Unknown
    );
    f.write_all_at(&3u32.to_le_bytes(), 1152).unwrap();
    assert_eq!(Inspector::open(&n).unwrap().info().backing, Backing::Thp);
}

/// A fresh directory standing in for `/sys/kernel/mm/transparent_hugepage`, removed on drop.
struct FakeSysfs(PathBuf);

impl FakeSysfs {
    fn new(shmem_enabled: &str, pmd: &str) -> FakeSysfs {
        let d = std::env::temp_dir().join(name("sysfs"));
        std::fs::create_dir(&d).unwrap();
        std::fs::write(d.join("shmem_enabled"), shmem_enabled).unwrap();
        std::fs::write(d.join("hpage_pmd_size"), pmd).unwrap();
        FakeSysfs(d)
    }
}

impl Drop for FakeSysfs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs the ignored test `child` in a child process with the fake sysfs; fails if it fails or
/// runs for more than 60 s (killed).
fn run_child(child: &str, sysfs: &FakeSysfs) {
    let mut c = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "--ignored",
            child,
            "--nocapture",
            "--test-threads=1",
        ])
        .env(THP_SYSFS_ENV, &sysfs.0)
        .env("DH_HUGE_CHILD", "1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if c.try_wait().unwrap().is_some() {
            break;
        }
        if Instant::now() > deadline {
            c.kill().unwrap();
            c.wait().unwrap();
            panic!("{child} hung");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let out = c.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{child}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("1 passed"),
        "{child} did not run"
    );
}

#[test]
fn try_with_thp_allowed_advises_rounds_the_file_and_records_the_backing() {
    // `force` allows shmem THP on every mount, so the madvise path runs for real here.
    let fake = FakeSysfs::new(
        "always within_size advise never deny [force]\n",
        "2097152\n",
    );
    run_child("child_try_with_thp_allowed", &fake);
}

#[test]
#[ignore = "run by try_with_thp_allowed_advises_rounds_the_file_and_records_the_backing"]
fn child_try_with_thp_allowed() {
    assert!(
        std::env::var_os("DH_HUGE_CHILD").is_some(),
        "run by its parent"
    );
    let n = name("thp");
    let p = Producer::create(
        &n,
        Config::new(Policy::Sequential)
            .slot_size(4096)
            .slot_count(4)
            .huge_pages(HugePages::Try),
    )
    .unwrap();
    let h = p.huge_pages().clone();
    eprintln!("outcome: {h:?}");
    // madvise(MADV_HUGEPAGE) is accepted on a shmem mapping whenever the kernel has THP, even
    // where the real settings give no huge pages: then the advice is recorded, unverified.
    if machine_has_real_settings_without_shm_thp() {
        assert_eq!(h.backing, Backing::ThpRequested, "{h:?}");
        assert!(h.reason.contains("smaps shows no huge mapping"), "{h:?}");
    } else {
        assert!(
            matches!(h.backing, Backing::ThpRequested | Backing::Thp),
            "{h:?}"
        );
    }
    let len = std::fs::metadata(format!("/dev/shm/{n}")).unwrap().len();
    assert_eq!(len % (2 << 20), 0, "file rounded to the huge page size");
    let info = Inspector::open(&n).unwrap().info();
    assert!(info.regions.total_size <= len && len - info.regions.total_size < 2 << 20);
    assert_eq!(info.backing, h.backing);
    // The bigger file is a normal block to its peers.
    let mut c = Consumer::attach(&n, Expectations::new()).unwrap();
    let mut p = p;
    let mut w = p.write(T).unwrap();
    w[..3].copy_from_slice(b"big");
    w.commit(3).unwrap();
    assert_eq!(&c.read(T).unwrap()[..], b"big");
    if h.backing == Backing::ThpRequested {
        // Require accepts only verified huge pages: the same request must fail, naming smaps.
        match Producer::create(
            &name("thpreq"),
            Config::new(Policy::Latest).huge_pages(HugePages::Require),
        ) {
            Err(Error::HugePagesUnavailable { why }) => assert!(why.contains("smaps"), "{why}"),
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn require_with_deny_fails_before_creating_anything() {
    let fake = FakeSysfs::new("always within_size advise never [deny] force", "2097152");
    run_child("child_require_with_deny", &fake);
}

#[test]
#[ignore = "run by require_with_deny_fails_before_creating_anything"]
fn child_require_with_deny() {
    assert!(
        std::env::var_os("DH_HUGE_CHILD").is_some(),
        "run by its parent"
    );
    let n = name("deny");
    match Producer::create(
        &n,
        Config::new(Policy::Latest).huge_pages(HugePages::Require),
    ) {
        Err(Error::HugePagesUnavailable { why }) => assert_eq!(why, "shmem_enabled is [deny]"),
        other => panic!("{other:?}"),
    }
    assert!(!Path::new(&format!("/dev/shm/{n}")).exists());
    // Try on the same settings: small pages, same reason, no rounding.
    let p = Producer::create(&n, Config::new(Policy::Latest).huge_pages(HugePages::Try)).unwrap();
    assert_eq!(p.huge_pages().backing, Backing::Small);
    assert_eq!(p.huge_pages().reason, "shmem_enabled is [deny]");
}

#[test]
fn garbage_shmem_enabled_is_a_fallback_not_a_crash() {
    let fake = FakeSysfs::new(&"x".repeat(10_000), "2097152");
    run_child("child_garbage_shmem_enabled", &fake);
}

#[test]
#[ignore = "run by garbage_shmem_enabled_is_a_fallback_not_a_crash"]
fn child_garbage_shmem_enabled() {
    assert!(
        std::env::var_os("DH_HUGE_CHILD").is_some(),
        "run by its parent"
    );
    let p = Producer::create(
        &name("garbage"),
        Config::new(Policy::Latest).huge_pages(HugePages::Try),
    )
    .unwrap();
    assert_eq!(p.huge_pages().backing, Backing::Small);
    assert!(
        p.huge_pages().reason.contains("unreadable"),
        "{:?}",
        p.huge_pages()
    );
}
