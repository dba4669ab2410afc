//! The tables `bench slab` prints (without `--json`).

use crate::Report;

pub(crate) fn si(v: f64) -> String {
    if !v.is_finite() {
        "-".to_owned()
    } else if v >= 1e9 {
        format!("{:.2} G", v / 1e9)
    } else if v >= 1e6 {
        format!("{:.1} M", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.1} k", v / 1e3)
    } else {
        format!("{v:.0}")
    }
}

fn mib(bytes: u64) -> String {
    format!("{:.2} MiB", bytes as f64 / (1024.0 * 1024.0))
}

pub(crate) fn print_tables(r: &Report) {
    let m = &r.machine;
    let c = &r.config;
    println!("{}", m.summary());
    println!(
        "workload: {}-byte objects, {} live, alloc all then free all in allocation order; \
         {} measured cycles (+{} warm-up) = {} timed allocations per allocator{}",
        c.object_size,
        c.live_objects,
        c.cycles,
        c.warmup_cycles,
        c.timed_allocations_per_allocator,
        if c.quick { " (quick)" } else { "" },
    );
    println!(
        "latencies in ns, each including one clock pair (~{} ns, not subtracted); \
         ops/s = allocs+frees per second of a separate untimed pass",
        r.results.temporal_slab.timer_overhead_ns
    );
    println!();
    println!(
        "{:<15} {:>8} {:>8} {:>8} {:>8} {:>10} {:>10}",
        "allocator", "p50", "p99", "p99.9", "p99.99", "max", "ops/s"
    );
    let res = &r.results;
    for l in [
        &res.temporal_slab,
        &res.system,
        &res.system_notrim,
        &res.mimalloc,
        &res.jemalloc,
    ] {
        println!(
            "{:<15} {:>8} {:>8} {:>8} {:>8} {:>10} {:>10}",
            l.allocator,
            l.p50_ns,
            l.p99_ns,
            l.p999_ns,
            l.p9999_ns,
            l.max_ns,
            si(l.ops_per_sec)
        );
    }
    println!();
    println!(
        "scaling: each thread allocs {} objects then frees them, {} ops per thread, \
         one epoch for temporal-slab",
        c.scaling_batch, r.scaling.ops_per_thread
    );
    println!(
        "{:<15} {:>12} {:>12} {:>7}",
        "allocator", "1 thread", "2 threads", "ratio"
    );
    for (name, s) in [
        ("temporal-slab", &r.scaling),
        ("mimalloc", &r.scaling_peers.mimalloc),
        ("jemalloc", &r.scaling_peers.jemalloc),
        ("system", &r.scaling_peers.system),
    ] {
        println!(
            "{:<15} {:>10}/s {:>10}/s {:>7.2}",
            name,
            si(s.threads_1_ops_per_sec),
            si(s.threads_2_ops_per_sec),
            s.ratio
        );
    }
    println!();
    let rss = &r.rss;
    println!(
        "rss (temporal-slab, {} x {} B, every byte written; {} recycled of {} slabs carved):",
        rss.live_objects, rss.object_size, rss.slabs_recycled, rss.slabs_carved
    );
    println!(
        "  baseline (allocator created)   {:>12}",
        mib(rss.baseline_bytes)
    );
    println!(
        "  after alloc                    {:>12}",
        mib(rss.after_alloc_bytes)
    );
    println!(
        "  after free, epoch open         {:>12}",
        mib(rss.after_free_before_close_bytes)
    );
    println!(
        "  after advance + close          {:>12}",
        mib(rss.after_close_bytes)
    );
    println!();
    println!(
        "close ({} MiB epoch of 128-byte objects, every byte written, all freed, then one \
         epoch_close timed):",
        r.config.close_epoch_bytes >> 20
    );
    println!(
        "  {:<22} {:>8} {:>8} {:>10} {:>10} {:>12} {:>10}",
        "", "slabs", "madvise", "close", "ns/slab", "ns/MiB", "rss after"
    );
    for (name, c) in [
        ("coalesced ranges", &r.close.coalesced),
        ("one call per slab", &r.close.per_slab_calls),
    ] {
        println!(
            "  {:<22} {:>8} {:>8} {:>8.2}ms {:>10.0} {:>12.0} {:>10}",
            name,
            c.slabs_recycled,
            c.madvise_calls,
            c.close_ns as f64 / 1e6,
            c.ns_per_slab,
            c.ns_per_mib,
            mib(c.rss_after_close_bytes)
        );
    }
    println!(
        "  per-slab cost, one call per slab / coalesced: {:.1}x",
        r.close.speedup_per_slab
    );
    println!();
    println!("goals:");
    let rows = r.goals.rows();
    let met = rows.iter().filter(|row| row.3).count();
    for (name, value, target, ok) in &rows {
        println!(
            "  {:<30} {:>22}  {:<12} {}",
            name,
            value,
            target,
            if *ok { "met" } else { "MISSED" }
        );
    }
    println!("  {met} of {} met", rows.len());
}
