//! A Rust producer of typed messages, for the Python package's schema-negotiation tests
//! (`crates/python/tests/test_datahub_schema.py`) and as an example of [`datahub::describe!`].
//!
//! ```text
//! typed_producer NAME COUNT
//! ```
//! Creates block NAME (Sequential, 8 slots) whose slots hold one `Sample` and whose schema is
//! the layout fingerprint of `Sample`, version 1. Prints `ready FINGERPRINT` once the block exists, waits up
//! to 30 s for a consumer, writes COUNT samples (`seq = i`, `t = i / 2`, `id = 7 * i`,
//! `temp = -i`, `xyz = [i, 2i, 3i, 4i]`), ends the stream and waits up to 30 s for them to be read. Exit 0, or 2
//! with a one-line error.

use std::time::Duration;

use datahub::{Config, Policy, TypedProducer};

/// The message: 40 bytes, aligned to 8, no padding (numpy: `np.dtype([("seq", "<u8"),
/// ("t", "<f8"), ("id", "<u4"), ("temp", "<f4"), ("xyz", "<f4", (4,))])`).
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(C)]
struct Sample {
    seq: u64,
    t: f64,
    id: u32,
    temp: f32,
    xyz: [f32; 4],
}
datahub::describe!(Sample {
    seq: u64,
    t: f64,
    id: u32,
    temp: f32,
    xyz: [f32; 4]
});

fn run() -> Result<(), String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [name, count] = args.as_slice() else {
        return Err("usage: typed_producer NAME COUNT".into());
    };
    let count: u64 = count.parse().map_err(|e| format!("COUNT {count:?}: {e}"))?;
    let config = Config::new(Policy::Sequential).slot_count(8);
    let mut p = TypedProducer::<Sample>::create(name, config, 1).map_err(|e| e.to_string())?;
    let schema = datahub::Schema::of::<Sample>(1).map_err(|e| e.to_string())?;
    println!("ready {}", schema.fingerprint());
    let wait = Duration::from_secs(30);
    p.inner()
        .wait_for_consumers(1, wait)
        .map_err(|e| e.to_string())?;
    for i in 0..count {
        let f = i as f32;
        let s = Sample {
            seq: i,
            t: i as f64 / 2.0,
            id: 7 * i as u32,
            temp: -f,
            xyz: [f, 2.0 * f, 3.0 * f, 4.0 * f],
        };
        p.send(&s, wait).map_err(|e| e.to_string())?;
    }
    p.inner().close();
    p.inner().wait_drained(wait).map_err(|e| e.to_string())?;
    Ok(())
}

fn main() {
    if let Err(e) = run() {
        eprintln!("typed_producer: {e}");
        std::process::exit(2);
    }
}
