//! A description of the machine a run was made on, for the `machine` object of the report.
//!
//! Everything is read from `/proc` (CPU model, memory, kernel) or the standard library (logical
//! cores); the rustc version is captured at build time by `build.rs` (`rustc -V`), the glibc
//! version at run time with `gnu_get_libc_version`. Anything that cannot be read is `null`.

use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

/// The machine and toolchain of a run.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    /// First "model name" of `/proc/cpuinfo`.
    pub cpu_model: Option<String>,
    /// `std::thread::available_parallelism()`.
    pub logical_cores: usize,
    /// "MemTotal" of `/proc/meminfo`, bytes.
    pub mem_total_bytes: Option<u64>,
    /// `/proc/sys/kernel/osrelease`.
    pub kernel: Option<String>,
    /// `rustc -V` of the compiler that built this binary.
    pub rustc: Option<String>,
    /// glibc version (the `system` allocators).
    pub glibc: Option<String>,
    /// Target architecture.
    pub arch: &'static str,
    /// Start of the run, seconds since the Unix epoch.
    pub timestamp_unix: u64,
    /// Start of the run, UTC, ISO 8601.
    pub timestamp_utc: String,
}

impl Machine {
    /// One line for the head of a table: CPU, cores, memory, kernel, rustc, glibc.
    pub fn summary(&self) -> String {
        format!(
            "machine: {} ({} logical cores, {}), Linux {}, {}, glibc {}",
            self.cpu_model.as_deref().unwrap_or("unknown CPU"),
            self.logical_cores,
            self.mem_total_bytes
                .map_or("? memory".to_owned(), |b| format!(
                    "{:.1} GiB",
                    b as f64 / (1u64 << 30) as f64
                )),
            self.kernel.as_deref().unwrap_or("?"),
            self.rustc.as_deref().unwrap_or("rustc ?"),
            self.glibc.as_deref().unwrap_or("?"),
        )
    }

    /// Describes this machine, now.
    pub fn detect() -> Machine {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        Machine {
            cpu_model: cpu_model(),
            logical_cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            mem_total_bytes: mem_total_bytes(),
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .ok()
                .map(|s| s.trim().to_owned()),
            rustc: option_env!("BENCH_RUSTC_VERSION").map(str::to_owned),
            glibc: glibc_version(),
            arch: std::env::consts::ARCH,
            timestamp_unix: now,
            timestamp_utc: iso8601_utc(now),
        }
    }
}

fn cpu_model() -> Option<String> {
    let text = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    text.lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_owned())
}

fn mem_total_bytes() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_ascii_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn glibc_version() -> Option<String> {
    // SAFETY: gnu_get_libc_version takes nothing and returns a pointer to a static,
    // NUL-terminated string that lives for the whole process; we only read it.
    let s = unsafe { std::ffi::CStr::from_ptr(libc::gnu_get_libc_version()) };
    s.to_str().ok().map(str::to_owned)
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn glibc_version() -> Option<String> {
    None
}

/// `secs` since the Unix epoch as RFC 3339 UTC, `YYYY-MM-DDTHH:MM:SSZ`.
fn iso8601_utc(secs: u64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs);
    humantime::format_rfc3339_seconds(t).to_string()
}

#[cfg(test)]
mod tests {
    #[test]
    fn iso8601() {
        assert_eq!(super::iso8601_utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(super::iso8601_utc(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(super::iso8601_utc(1_700_000_000), "2023-11-14T22:13:20Z");
    }
}
