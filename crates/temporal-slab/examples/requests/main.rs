//! The main job (until `tslab demo` exists): JSON documents processed as requests, each batch in
//! its own epoch of a temporal-slab allocator, epochs closed per batch so their pages go back to
//! the kernel.
//!
//! ```text
//! cargo run --release -p temporal-slab --example requests [-- [--batch N] [PATH ...]]
//! ```
//! A PATH is a JSON file (one request) or an NDJSON file (one request per line). Without paths it
//! runs on 5,000 documents it generates itself (deterministic), so it works on a fresh machine.
//! Prints per-batch progress to stderr and a summary (documents, keys, slabs, RSS, epoch closes,
//! slow-path analysis, leaks) to stdout.

#[path = "workload.rs"]
#[allow(dead_code)] // `reference_counts` is for the real-input test
mod workload;

use std::time::Instant;

use temporal_slab::{SlabAllocator, diag, process_rss_bytes};

struct Request {
    label: String,
    json: serde_json::Value,
}

fn generated(n: usize) -> Vec<Request> {
    let kinds = ["order", "search", "login", "profile", "checkout"];
    (0..n)
        .map(|i| {
            let kind = kinds[i % kinds.len()];
            let items: Vec<serde_json::Value> = (0..(i % 17) + 1)
                .map(|j| {
                    serde_json::json!({
                        "sku": format!("SKU-{:05}", (i * 31 + j * 7) % 10_000),
                        "qty": (i + j) % 9 + 1,
                        "price": ((i * j) % 1000) as f64 / 10.0,
                        "tags": ["a", "b", kind],
                    })
                })
                .collect();
            let json = serde_json::json!({
                "id": i,
                "kind": kind,
                "user": {"name": format!("user-{}", i % 313), "tier": i % 3, "active": i % 5 != 0},
                "items": items,
                "note": "x".repeat(i % 200),
            });
            Request {
                label: kind.to_owned(),
                json,
            }
        })
        .collect()
}

fn load(path: &str) -> Result<Vec<Request>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {path}: {e}"))?;
    let name = std::path::Path::new(path)
        .file_name()
        .map_or_else(|| path.to_owned(), |n| n.to_string_lossy().into_owned());
    if let Ok(json) = serde_json::from_str::<serde_json::Value>(&text) {
        return Ok(vec![Request { label: name, json }]);
    }
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, line)| {
            serde_json::from_str(line)
                .map(|json| Request {
                    label: name.clone(),
                    json,
                })
                .map_err(|e| format!("{path}:{}: not JSON: {e}", i + 1))
        })
        .collect()
}

fn main() {
    let mut args = std::env::args().skip(1).peekable();
    let mut batch = 64usize;
    let mut paths = Vec::new();
    while let Some(a) = args.next() {
        match a.as_str() {
            "--batch" => {
                batch = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .filter(|&b| b > 0)
                    .unwrap_or_else(|| {
                        eprintln!("error: --batch takes a positive number");
                        std::process::exit(2)
                    })
            }
            "-h" | "--help" => {
                println!(
                    "usage: requests [--batch N] [PATH ...]  (JSON or NDJSON files; none = generated input)"
                );
                return;
            }
            _ => paths.push(a),
        }
    }
    let requests = if paths.is_empty() {
        generated(5_000)
    } else {
        let mut all = Vec::new();
        for p in &paths {
            match load(p) {
                Ok(mut r) => all.append(&mut r),
                Err(e) => {
                    eprintln!("error: {e}");
                    std::process::exit(2);
                }
            }
        }
        all
    };

    let slab = match SlabAllocator::new() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    };
    let rss_start = process_rss_bytes().unwrap_or(0);
    let mut peak_rss = rss_start;
    let start = Instant::now();
    let mut totals = workload::Counts::default();
    for (b, chunk) in requests.chunks(batch).enumerate() {
        let id = slab.epoch_current();
        let _ = slab.set_label(id, &chunk[0].label);
        let epoch = slab.epoch(id);
        for req in chunk {
            let _domain = slab.enter(id).expect("current epoch is active");
            let tree = workload::build(&req.json, &epoch);
            let c = workload::count(&tree, &epoch);
            totals.values += c.values;
            totals.keys += c.keys;
            totals.distinct_keys = totals.distinct_keys.max(c.distinct_keys);
            totals.top_key_count = totals.top_key_count.max(c.top_key_count);
            totals.string_bytes += c.string_bytes;
            totals.numbers += c.numbers;
        }
        peak_rss = peak_rss.max(process_rss_bytes().unwrap_or(0));
        slab.epoch_advance();
        if let Err(e) = slab.epoch_close(id) {
            eprintln!("error: closing batch {b}: {e}");
            std::process::exit(2);
        }
        if b % 20 == 0 {
            eprintln!(
                "batch {b}: {} requests done",
                (b + 1) * batch.min(chunk.len())
            );
        }
    }
    let elapsed = start.elapsed();
    let snap = slab.stats();
    let allocs: u64 = snap.classes.iter().map(|c| c.allocs).sum();
    let source = if paths.is_empty() {
        "generated".to_owned()
    } else {
        format!("{} files", paths.len())
    };
    println!("requests:            {} ({source})", requests.len());
    println!(
        "json values walked:  {} ({} numbers, {} string bytes)",
        totals.values, totals.numbers, totals.string_bytes
    );
    println!(
        "object keys counted: {} (max distinct per request {})",
        totals.keys, totals.distinct_keys
    );
    println!(
        "slab allocations:    {allocs} in {:.1} ms ({:.0} requests/s)",
        elapsed.as_secs_f64() * 1e3,
        requests.len() as f64 / elapsed.as_secs_f64()
    );
    println!(
        "system fallbacks:    {} (> 768 bytes)",
        snap.system_fallback_allocs
    );
    println!(
        "epochs closed:       {} ({} slabs recycled, {:.1} us per close)",
        snap.epoch_close_calls,
        snap.epoch_close_recycled_slabs,
        snap.epoch_close_total_ns as f64 / snap.epoch_close_calls.max(1) as f64 / 1e3
    );
    println!(
        "slabs carved:        {} ({} KiB), madvise {} calls / {} KiB / {} failures",
        snap.slabs_carved,
        snap.slabs_carved * 4,
        snap.total_madvise_calls,
        snap.total_madvise_bytes / 1024,
        snap.total_madvise_failures
    );
    println!(
        "rss:                 start {} KiB, peak {} KiB, end {} KiB",
        rss_start / 1024,
        peak_rss / 1024,
        snap.rss_bytes / 1024
    );
    let live: u64 = snap.classes.iter().map(|c| c.live_objects).sum();
    println!("live objects at end: {live}");
    println!(
        "slow path:           {}",
        diag::slow_path_analysis(&snap).recommendation
    );
    let leaks = diag::leak_report(&snap, std::time::Duration::ZERO);
    println!("leaked epochs:       {}", leaks.len());
    for l in leaks {
        println!("  {}", l.message);
    }
}
