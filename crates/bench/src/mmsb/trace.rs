//! The real editing trace: replaying it through a bus, several times, and its medians.

use super::*;

/// The trace workload: `automerge-paper` through `mmsb_trace::run_trace` (fresh bus,
/// Durability::Flush as `mmsb trace` uses, bus timings off, one commit and propagation wave per
/// 100 transactions, a checkpoint after half of them), then `verify` (untimed: replay, mid-trace
/// checkpoint and restore checked against the trace's text), then `State::replay(dir, End)` of
/// the stopped bus's log, timed. `runs` whole runs; the medians are reported.
pub(super) fn run_trace(parent: &Path, runs: usize, progress: &dyn Fn(&str)) -> TraceResult {
    let skipped = |note: String| TraceResult {
        note: Some(note),
        ..TraceResult::default()
    };
    let file = shared_data_dir()
        .join("editing-traces")
        .join(format!("{TRACE_NAME}.json.gz"));
    if !file.is_file() {
        return skipped(format!(
            "skipped: {} not found (set SHARED_DATA_DIR to the directory holding editing-traces/)",
            file.display()
        ));
    }
    progress(&format!("trace: loading {}", file.display()));
    let trace = match mmsb_trace::load(&file) {
        Ok(t) => t,
        Err(e) => return skipped(format!("skipped: {e}")),
    };
    match trace_runs(&trace, parent, runs, progress) {
        Ok(r) => r,
        Err(e) => skipped(format!("failed: {e}")),
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn trace_runs(
    trace: &mmsb_trace::Trace,
    parent: &Path,
    runs: usize,
    progress: &dyn Fn(&str),
) -> R<TraceResult> {
    use mmsb_trace::{RunOptions, run_trace as run_one, verify};
    let (mut apply, mut txns_ms, mut finish, mut replay) = (vec![], vec![], vec![], vec![]);
    let mut last = None;
    for run in 0..runs {
        let tmp = tempfile::Builder::new()
            .prefix("mmsb-bench-trace-")
            .tempdir_in(parent)
            .ctx("temporary directory")?;
        let opts = RunOptions {
            trace: None,
            log_dir: Some(tmp.path().join("log")),
            durability: Durability::Flush,
            timings: false,
            ..RunOptions::default()
        };
        let report = run_one(trace, &opts).ctx("trace run")?;
        verify(trace, &report).ctx("trace verify")?;
        let t0 = Instant::now();
        // From empty: `State::replay(dir, End)` now starts from the newest checkpoint.
        let state = State::new()
            .replay_log(&report.log_dir, ReplayTarget::End)
            .ctx("State::replay_log")?;
        let replay_s = t0.elapsed().as_secs_f64();
        black_box(state);
        let ms = |s: f64| s * 1e3;
        progress(&format!(
            "trace {TRACE_NAME} run {}: apply {:.0} ms (+ finish {:.0} ms), replay {:.0} ms, log {} bytes",
            run + 1,
            ms(report.apply_seconds),
            ms(report.finish_seconds),
            ms(replay_s),
            report.log_file_bytes
        ));
        apply.push(ms(report.apply_seconds + report.finish_seconds));
        txns_ms.push(ms(report.apply_seconds));
        finish.push(ms(report.finish_seconds));
        replay.push(ms(replay_s));
        last = Some(report);
    }
    let report = last.ok_or("no trace run")?;
    let mut extra = BTreeMap::new();
    let mut put = |k: &str, v: serde_json::Value| {
        extra.insert(k.to_owned(), v);
    };
    put("runs", runs.into());
    put("apply_txns_ms", median(txns_ms).into());
    put("finish_ms", median(finish).into());
    put("apply_ms_each", apply.clone().into());
    put("replay_ms_each", replay.clone().into());
    put("txns", report.txns.into());
    put("patches", report.patches.into());
    put("commits", report.commits.into());
    put("wave_every", report.wave_every.into());
    put("user_deltas", report.user_deltas.into());
    put("propagation_deltas", report.stats.propagation_deltas.into());
    put("doc_bytes", report.doc_bytes.into());
    put("durability", "Flush".into());
    Ok(TraceResult {
        apply_ms: Some(median(apply)),
        replay_ms: Some(median(replay)),
        log_bytes: Some(report.log_file_bytes),
        extra,
        note: Some(
            "apply_ms: mmsb_trace::run_trace's apply + finish time (every transaction through \
             write_range into a gap-buffer document page, in batches of wave_every transactions, \
             each batch one commit and one propagation wave recomputing a line index and a word \
             count; the mid-trace checkpoint excluded), Durability::Flush, bus timings off; \
             replay_ms: State::new().replay_log(dir, End) of the whole log from empty, page cache warm; \
             log_bytes: size of the log segment files; medians over runs"
                .to_owned(),
        ),
    })
}
