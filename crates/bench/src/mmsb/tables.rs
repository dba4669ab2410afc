//! The human-readable tables `bench mmsb` prints without `--json`.

use super::*;

pub(super) fn print_tables(r: &Report) {
    let c = &r.config;
    println!("{}", r.machine.summary());
    println!(
        "mmsb: fresh bus per workload under {} ({}), log Buffered unless named, bus timings off{}",
        c.temp_dir.display(),
        c.temp_dir_fs.as_deref().unwrap_or("unknown filesystem"),
        if c.sizes.quick { " (quick)" } else { "" }
    );
    println!(
        "latencies per operation, each including one clock pair (~{} ns, not subtracted); \
         ops/s from an untimed pass (*: from the timed samples)",
        c.timer_overhead_ns
    );
    println!();
    println!(
        "{:<41} {:>8} {:>9} {:>9} {:>9} {:>9} {:>10} {:>9} {:>9}",
        "workload", "samples", "p50", "p99", "p99.9", "max", "ops/s", "log B/op", "MMSB.jl"
    );
    for (name, w) in &r.results.0 {
        println!(
            "{:<41} {:>8} {:>9} {:>9} {:>9} {:>9} {:>9}{} {:>9} {:>9}",
            name,
            w.samples,
            dur(w.p50_ns as f64),
            dur(w.p99_ns as f64),
            dur(w.p999_ns as f64),
            dur(w.max_ns as f64),
            crate::si(w.ops_per_sec),
            if w.ops_per_sec_from == "untimed pass" {
                " "
            } else {
                "*"
            },
            w.log_bytes_per_op
                .map_or("-".to_owned(), |b| format!("{b:.0}")),
            r.original
                .for_workload(name)
                .map_or("-".to_owned(), |ns| dur(ns as f64)),
        );
    }
    println!();
    for (name, t) in &r.trace.0 {
        match (t.apply_ms, t.replay_ms, t.log_bytes) {
            (Some(a), Some(p), Some(b)) => println!(
                "trace {name}: apply with logging {a:.1} ms, replay {p:.1} ms, log {:.2} MiB",
                b as f64 / (1024.0 * 1024.0)
            ),
            _ => println!("trace {name}: {}", t.note.as_deref().unwrap_or("not run")),
        }
    }
    println!();
    if !r.replication.0.is_empty() {
        println!(
            "replication through NATS JetStream on loopback (each write its own commit, log Flush; \
             lag = leader commit to follower applied):"
        );
        println!(
            "{:<26} {:>7} {:>8} {:>10} {:>10} {:>7} {:>11} {:>11} {:>14} {:>14}",
            "workload",
            "writes",
            "frame B",
            "local/s",
            "shipped/s",
            "ratio",
            "backlog p50",
            "backlog p99",
            "paced lag p50",
            "paced lag p99"
        );
        let f = |v: Option<f64>| v.map_or("-".to_owned(), crate::si);
        let m = |v: Option<f64>| v.map_or("-".to_owned(), |x| format!("{x:.2} ms"));
        for (name, x) in &r.replication.0 {
            if let Some(n) = &x.note {
                println!("{name:<26} {n}");
                continue;
            }
            println!(
                "{:<26} {:>7} {:>8} {:>10} {:>10} {:>7} {:>11} {:>11} {:>14} {:>14}",
                name,
                x.writes,
                x.frame_bytes,
                f(x.local_deltas_per_sec),
                f(x.shipped_deltas_per_sec),
                x.shipped_over_local
                    .map_or("-".to_owned(), |v| format!("{v:.2}")),
                m(x.unthrottled_lag_p50_ms),
                m(x.unthrottled_lag_p99_ms),
                m(x.paced_lag_p50_ms),
                m(x.paced_lag_p99_ms),
            );
        }
        if let Some((_, x)) = r.replication.0.first()
            && let Some(rate) = x.paced_rate_per_sec
        {
            println!("  paced: {rate:.0} writes/s");
        }
        println!();
    }
    println!("goals:");
    let evaluated = r.goals.iter().filter(|g| g.evaluated).count();
    let met = r.goals.iter().filter(|g| g.evaluated && g.goal.met).count();
    for g in &r.goals {
        let status = match (g.evaluated, g.goal.met) {
            (false, _) => "not run",
            (true, true) => "met",
            (true, false) => "MISSED",
        };
        println!(
            "  {:<50} {:>14}  {} {:<10} {}",
            g.name,
            if g.evaluated {
                format!("{:.0}", g.goal.value)
            } else {
                "-".to_owned()
            },
            g.goal.comparison,
            g.goal.target,
            status
        );
    }
    println!(
        "  {met} of {evaluated} evaluated goals met ({} not run)",
        r.goals.len() - evaluated
    );
    println!();
    println!("MMSB.jl column: {}", r.original.source);
    println!("notes:");
    for n in &r.notes {
        println!("  - {n}");
    }
}
