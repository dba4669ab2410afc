//! Captures `rustc -V` of the compiler building this crate as `BENCH_RUSTC_VERSION`, for the
//! `machine` section of the report. Nothing is set when it cannot be run.

use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=RUSTC");
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".to_owned());
    let version = Command::new(rustc)
        .arg("-V")
        .output()
        .ok()
        .filter(|out| out.status.success())
        .and_then(|out| String::from_utf8(out.stdout).ok());
    if let Some(v) = version {
        println!("cargo:rustc-env=BENCH_RUSTC_VERSION={}", v.trim());
    }
}
