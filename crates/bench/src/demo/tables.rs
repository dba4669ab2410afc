//! `bench demo`'s tables for people.

use super::{Report, VsGoal};

fn mib(bytes: f64) -> String {
    format!("{:.1} MiB", bytes / f64::from(1u32 << 20))
}

fn dur(ns: f64) -> String {
    if !ns.is_finite() {
        "-".to_owned()
    } else if ns >= 1e9 {
        format!("{:.2} s", ns / 1e9)
    } else if ns >= 1e6 {
        format!("{:.2} ms", ns / 1e6)
    } else if ns >= 1e3 {
        format!("{:.1} us", ns / 1e3)
    } else {
        format!("{ns:.0} ns")
    }
}

fn goal(name: &str, g: &VsGoal, show: fn(f64) -> String) -> String {
    let target = if g.factor == 1.0 {
        format!("{} {}", g.peer, show(g.peer_value))
    } else {
        format!("{}x {} {}", g.factor, g.peer, show(g.peer_value))
    };
    format!(
        "  {name:<34} {:>12} {} {:<32} {}",
        show(g.value),
        g.comparison,
        target,
        if g.met { "met" } else { "MISSED" }
    )
}

/// Prints the machine line, one table per corpus and the goals.
pub(super) fn print(r: &Report) {
    println!("{}", r.machine.summary());
    println!(
        "workers {}, batch {}, RSS sampled every {} ms",
        r.config.workers, r.config.batch, r.config.rss_interval_ms
    );
    for c in &r.corpora {
        println!();
        println!(
            "{} corpus ({}: {} documents, {}), {} requests per peer",
            c.corpus,
            c.source,
            c.documents,
            mib(c.bytes as f64),
            c.requests
        );
        println!(
            "  {:<20} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10}",
            "peer", "req/s", "p50", "p99", "p99.9", "peak RSS", "final RSS"
        );
        for p in &c.peers {
            println!(
                "  {:<20} {:>10.1} {:>10} {:>10} {:>10} {:>10} {:>10}",
                p.peer,
                p.requests_per_sec,
                dur(p.latency.p50_ns as f64),
                dur(p.latency.p99_ns as f64),
                dur(p.latency.p999_ns as f64),
                mib(p.rss.peak_bytes as f64),
                mib(p.rss.final_bytes as f64),
            );
        }
    }
    println!();
    if r.goals.is_empty() {
        println!("goals: not computed (no real corpus)");
    }
    for (peer, g) in &r.goals {
        println!("goals of {peer} (real corpus):");
        println!("{}", goal("p99 <= best peer", &g.p99_le_best_peer, dur));
        println!(
            "{}",
            goal("final RSS <= every peer", &g.final_rss_le_every_peer, mib)
        );
        println!(
            "{}",
            goal(
                "requests/s >= 0.9x best peer",
                &g.requests_per_sec_ge_0_9x_best_peer,
                |v| format!("{v:.1}")
            )
        );
    }
    for n in &r.notes {
        println!("note: {n}");
    }
}
