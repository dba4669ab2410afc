//! A block truncated under its mappings: the producer and the consumer report
//! `BlockTruncated` instead of dying of SIGBUS; a SIGBUS that is not a block's still kills.

use std::os::unix::process::ExitStatusExt;
use std::time::Duration;

use datahub::{Config, Consumer, Error, Expectations, Policy, Producer};

const T: Duration = Duration::from_secs(5);

fn name(tag: &str) -> String {
    format!("dh-sigbus-{tag}-{}", std::process::id())
}

fn truncate(name: &str, len: u64) {
    std::fs::OpenOptions::new()
        .write(true)
        .open(datahub::shm_dir().join(name))
        .unwrap()
        .set_len(len)
        .unwrap();
}

#[test]
fn a_truncated_block_is_an_error_for_its_producer_and_consumer_not_a_crash() {
    let n = name("lib");
    let mut p = Producer::create(
        &n,
        Config::new(Policy::Sequential)
            .slot_count(4)
            .slot_size(4096),
    )
    .unwrap();
    let mut c = Consumer::attach(&n, Expectations::new()).unwrap();
    p.send(b"a", T).unwrap();
    assert_eq!(&c.read(T).unwrap()[..], b"a");
    truncate(&n, 4096);
    match p.send(b"b", T) {
        Err(Error::BlockTruncated { found: 4096, .. }) => {}
        other => panic!("producer: {other:?}"),
    }
    match c.read(T) {
        Err(e @ Error::BlockTruncated { .. }) => {
            assert!(e.to_string().contains("was truncated to 4096 bytes"), "{e}");
        }
        other => panic!("consumer: {:?}", other.map(|g| g.seq())),
    }
    assert!(matches!(
        c.check_intact(),
        Err(Error::BlockTruncated { .. })
    ));
    assert!(matches!(
        p.check_intact(),
        Err(Error::BlockTruncated { .. })
    ));
    drop(c);
    drop(p);
    let _ = datahub::remove(&n);
}

const CHILD: &str = "DATAHUB_SIGBUS_TEST_CHILD";

#[test]
fn a_sigbus_outside_every_block_still_kills_the_process() {
    if std::env::var_os(CHILD).is_some() {
        // The handler is installed (a block is mapped); then a fault in a plain file mapping.
        let n = name("child");
        let _p = Producer::create(&n, Config::new(Policy::Latest).slot_count(1)).unwrap();
        let path = std::env::temp_dir().join(format!("dh-sigbus-plain-{}", std::process::id()));
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        f.set_len(8192).unwrap();
        // SAFETY: a fresh shared mapping of our own 8192-byte file.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                8192,
                libc::PROT_READ,
                libc::MAP_SHARED,
                std::os::fd::AsRawFd::as_raw_fd(&f),
                0,
            )
        };
        assert_ne!(p, libc::MAP_FAILED);
        f.set_len(0).unwrap();
        let _ = std::fs::remove_file(&path);
        let _ = datahub::remove(&n);
        // SAFETY: the address is mapped; reading it past the file's end raises SIGBUS, which
        // is the point.
        let v = unsafe { std::ptr::read_volatile(p as *const u8) };
        println!("survived a foreign SIGBUS ({v})");
        std::process::exit(0);
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "a_sigbus_outside_every_block_still_kills_the_process",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, "1")
        .output()
        .unwrap();
    assert_eq!(
        out.status.signal(),
        Some(libc::SIGBUS),
        "{:?} {}",
        out.status,
        String::from_utf8_lossy(&out.stdout)
    );
}
