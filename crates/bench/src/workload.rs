//! The workloads, run inside a child process (see `main.rs` for why every run gets a fresh one).
//!
//! # Latency ([`run_latency`])
//! `live` objects of [`OBJECT_SIZE`] bytes are allocated one after the other, then all freed in
//! allocation order; that is one **cycle**. Warm-up cycles run first and are not recorded; in
//! each measured cycle every single allocation call is timed on its own: `Instant::now()` before,
//! `elapsed()` after, the pointer passed through `black_box` in between so the call cannot move
//! out of the timed section. The nanoseconds go into an HDR histogram (3 significant digits)
//! that, like the pointer array, was allocated before the workload and is never resized (its
//! range is fixed at 1 ns..60 s; larger values are clamped). Frees are not timed. The fixed cost
//! of one empty timed section ([`timer_overhead_ns`], the median of 10,000) is reported next to
//! the percentiles and is *included* in them, not subtracted.
//!
//! # Throughput
//! After the timed cycles the same child runs the same number of cycles again without any clock
//! read inside them, and `ops_per_sec` = (allocations + frees) / wall time of that pass, so the
//! cost of the clock does not pollute throughput.
//!
//! # Scaling ([`run_scaling`])
//! `threads` threads (started with `std::thread::scope`) each allocate `batch` objects then free
//! them all, round after round, until each has done `ops_per_thread` allocations + frees. Each
//! thread first does one unmeasured round, then all wait on a barrier; the clock runs from the
//! barrier to the last join. For temporal-slab all threads allocate in the same epoch.
//!
//! # RSS ([`run_rss`])
//! temporal-slab only: RSS after creating the allocator, after allocating `live` objects in one
//! epoch and writing every byte of each (so their pages are really resident), after freeing all
//! of them with the epoch still open, and after `epoch_advance` + `epoch_close` of that epoch.
//! The harness's pointer array is allocated and written before the baseline, so it is not
//! counted as allocator growth.
//!
//! # The allocators ([`RawAlloc`])
//! - `temporal-slab`: `alloc_ptr(128, epoch)` / `free_ptr` in one epoch that stays open across
//!   cycles: freed slabs stay on the epoch's partial lists and are reused (the steady state).
//! - `system`: glibc `malloc`/`free` through `libc`, glibc defaults. glibc's default
//!   `M_TRIM_THRESHOLD` (128 KiB) makes `free` give the top of the heap back to the kernel once
//!   everything is freed, so the next cycle page-faults the heap in again.
//! - `system-notrim`: the same after `mallopt(M_TRIM_THRESHOLD, 1 << 30)` as the child's very
//!   first action (`M_MMAP_THRESHOLD` left at its default; note that setting the trim threshold
//!   also switches off glibc's dynamic mmap-threshold adjustment).
//! - `mimalloc`, `jemalloc`: `mimalloc::MiMalloc` and `tikv_jemallocator::Jemalloc` called
//!   directly through `GlobalAlloc::alloc`/`dealloc` with `Layout::from_size_align(128, 16)`;
//!   neither is the process's `#[global_allocator]` (that stays the system allocator, so the
//!   harness's own few allocations come from glibc in every child).

use std::alloc::{GlobalAlloc, Layout};
use std::fmt;
use std::hint::black_box;
use std::ptr::NonNull;
use std::sync::Barrier;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use temporal_slab::{EpochId, SlabAllocator};

/// Object size of every workload, bytes.
pub const OBJECT_SIZE: usize = 128;
/// Alignment asked of the `GlobalAlloc` allocators (what malloc and temporal-slab give anyway).
pub const OBJECT_ALIGN: usize = 16;
/// Largest latency the histogram tracks, ns (larger samples are clamped to it).
const HIST_MAX_NS: u64 = 60_000_000_000;
/// Empty timed sections measured for [`timer_overhead_ns`].
const TIMER_SAMPLES: usize = 10_000;

/// Something that can fail in a workload.
#[derive(Debug)]
pub enum WorkloadError {
    /// An allocation returned null (or an error, for temporal-slab).
    AllocFailed {
        /// Objects allocated successfully before it in this cycle or round.
        after: usize,
    },
    /// temporal-slab rejected frees of pointers it handed out (a bug in it or in the harness).
    FreeErrors(u64),
    /// Setting the allocator or the histogram up failed.
    Setup(String),
    /// A worker thread panicked.
    ThreadPanicked,
}

impl fmt::Display for WorkloadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WorkloadError::AllocFailed { after } => {
                write!(f, "allocation failed after {after} objects")
            }
            WorkloadError::FreeErrors(n) => write!(f, "{n} frees were rejected"),
            WorkloadError::Setup(s) => write!(f, "setup failed: {s}"),
            WorkloadError::ThreadPanicked => write!(f, "a worker thread panicked"),
        }
    }
}

impl std::error::Error for WorkloadError {}

impl From<temporal_slab::Error> for WorkloadError {
    fn from(e: temporal_slab::Error) -> WorkloadError {
        WorkloadError::Setup(e.to_string())
    }
}

/// An allocator of fixed-size ([`OBJECT_SIZE`]) objects, as the workloads see it.
pub trait RawAlloc: Sync {
    /// A new object of [`OBJECT_SIZE`] bytes, 16-byte aligned, or null on failure.
    fn alloc(&self) -> *mut u8;
    /// Frees an object.
    ///
    /// # Safety
    /// `p` came from `self.alloc()`, is not null and has not been freed since.
    unsafe fn free(&self, p: *mut u8);
    /// Frees the allocator rejected (only temporal-slab checks).
    fn free_errors(&self) -> u64 {
        0
    }
    /// The allocator's own counters for the workload's size class (temporal-slab only).
    fn diagnostics(&self) -> Option<SlabDiag> {
        None
    }
}

/// temporal-slab's counters for the 128-byte class after a workload, to explain its numbers.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SlabDiag {
    /// Slow-path entries (no current-partial slab with room).
    pub slow_path_hits: u64,
    /// Class-lock acquisitions that found the lock free.
    pub lock_fast_acquire: u64,
    /// Class-lock acquisitions that had to wait.
    pub lock_contended: u64,
    /// Failed bitmap CAS on allocation.
    pub bitmap_alloc_cas_retries: u64,
    /// Failed bitmap CAS on free.
    pub bitmap_free_cas_retries: u64,
    /// Full-to-partial list moves (a free into a full slab).
    pub list_move_full_to_partial: u64,
    /// Slabs carved from the reservation.
    pub new_slab_count: u64,
}

/// glibc `malloc`/`free` (the `system` and `system-notrim` allocators).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemMalloc;

impl RawAlloc for SystemMalloc {
    #[inline]
    fn alloc(&self) -> *mut u8 {
        // SAFETY: malloc has no preconditions; it returns null or a block of at least
        // OBJECT_SIZE bytes aligned to 16 (glibc's MALLOC_ALIGNMENT on 64-bit).
        unsafe { libc::malloc(OBJECT_SIZE) }.cast()
    }

    #[inline]
    unsafe fn free(&self, p: *mut u8) {
        // SAFETY: the caller guarantees p came from our malloc and was not freed since.
        unsafe { libc::free(p.cast()) }
    }
}

/// A `GlobalAlloc` called directly (mimalloc, jemalloc), not installed as the global allocator.
#[derive(Debug)]
pub struct Global<G> {
    inner: G,
    layout: Layout,
}

impl<G: GlobalAlloc> Global<G> {
    /// Wraps `inner` with the workloads' layout (128 bytes, 16-byte aligned).
    pub fn new(inner: G) -> Result<Global<G>, WorkloadError> {
        let layout = Layout::from_size_align(OBJECT_SIZE, OBJECT_ALIGN)
            .map_err(|e| WorkloadError::Setup(e.to_string()))?;
        Ok(Global { inner, layout })
    }
}

impl<G: GlobalAlloc + Sync> RawAlloc for Global<G> {
    #[inline]
    fn alloc(&self) -> *mut u8 {
        // SAFETY: the layout has a non-zero size (128) and a power-of-two alignment.
        unsafe { self.inner.alloc(self.layout) }
    }

    #[inline]
    unsafe fn free(&self, p: *mut u8) {
        // SAFETY: the caller guarantees p came from `self.inner.alloc(self.layout)` (the only
        // way this type allocates) and was not freed since; the layout is the same.
        unsafe { self.inner.dealloc(p, self.layout) }
    }
}

/// temporal-slab through its pointer API, every object in one epoch.
#[derive(Debug)]
pub struct Slab {
    slab: SlabAllocator,
    epoch: EpochId,
    free_errors: AtomicU64,
}

impl Slab {
    /// A fresh allocator (default config) and its current epoch, which is never closed.
    pub fn new() -> Result<Slab, WorkloadError> {
        let slab = SlabAllocator::new()?;
        let epoch = slab.epoch_current();
        Ok(Slab {
            slab,
            epoch,
            free_errors: AtomicU64::new(0),
        })
    }
}

impl RawAlloc for Slab {
    #[inline]
    fn alloc(&self) -> *mut u8 {
        match self.slab.alloc_ptr(OBJECT_SIZE, self.epoch) {
            Ok(p) => p.as_ptr(),
            Err(_) => std::ptr::null_mut(),
        }
    }

    #[inline]
    unsafe fn free(&self, p: *mut u8) {
        let Some(p) = NonNull::new(p) else {
            self.free_errors.fetch_add(1, Ordering::Relaxed);
            return;
        };
        if self.slab.free_ptr(p).is_err() {
            self.free_errors.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn free_errors(&self) -> u64 {
        self.free_errors.load(Ordering::Relaxed)
    }

    fn diagnostics(&self) -> Option<SlabDiag> {
        let class = temporal_slab::class_for_size(OBJECT_SIZE)?;
        let stats = self.slab.stats();
        let c = stats.classes.get(class)?;
        Some(SlabDiag {
            slow_path_hits: c.slow_path_hits,
            lock_fast_acquire: c.lock_fast_acquire,
            lock_contended: c.lock_contended,
            bitmap_alloc_cas_retries: c.bitmap_alloc_cas_retries,
            bitmap_free_cas_retries: c.bitmap_free_cas_retries,
            list_move_full_to_partial: c.list_move_full_to_partial,
            new_slab_count: c.new_slab_count,
        })
    }
}

/// Parameters of a latency run.
#[derive(Debug, Clone, Copy)]
pub struct LatencyParams {
    /// Measured cycles (each also run once more, untimed, for throughput).
    pub cycles: u32,
    /// Unrecorded cycles before the measured ones.
    pub warmup: u32,
}

/// What a latency child prints (one JSON line) and the parent reads back.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LatencyResult {
    /// Allocator name.
    pub allocator: String,
    /// Median allocation latency, ns (timer overhead included).
    pub p50_ns: u64,
    /// 99th percentile, ns.
    pub p99_ns: u64,
    /// 99.9th percentile, ns.
    pub p999_ns: u64,
    /// 99.99th percentile, ns.
    pub p9999_ns: u64,
    /// Largest sample, ns.
    pub max_ns: u64,
    /// Smallest sample, ns.
    pub min_ns: u64,
    /// Mean, ns.
    pub mean_ns: f64,
    /// Timed allocations.
    pub samples: u64,
    /// (allocations + frees) per second of the untimed pass.
    pub ops_per_sec: f64,
    /// Operations of the untimed pass.
    pub throughput_ops: u64,
    /// Wall time of the untimed pass, seconds.
    pub throughput_secs: f64,
    /// Median cost of one empty `Instant::now()` / `elapsed()` pair, ns; included in the
    /// percentiles above, not subtracted.
    pub timer_overhead_ns: u64,
    /// Measured cycles.
    pub cycles: u32,
    /// Warm-up cycles.
    pub warmup_cycles: u32,
    /// Live objects per cycle.
    pub live_objects: usize,
    /// Process RSS at the end of the workload (everything freed), bytes.
    pub rss_end_bytes: Option<u64>,
    /// temporal-slab's class counters over the whole child (warm-up, timed and untimed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slab_diag: Option<SlabDiag>,
}

/// A histogram for allocation latencies, allocated up front so recording never allocates.
pub fn new_histogram() -> Result<Histogram<u64>, WorkloadError> {
    Histogram::new_with_bounds(1, HIST_MAX_NS, 3).map_err(|e| WorkloadError::Setup(e.to_string()))
}

/// A pointer array of `live` slots, every slot written (so its pages are resident before any
/// workload runs).
pub fn new_slots(live: usize) -> Vec<*mut u8> {
    vec![NonNull::<u8>::dangling().as_ptr(); live]
}

/// Median cost of an empty timed section (`Instant::now()` then `elapsed()`), ns.
pub fn timer_overhead_ns() -> u64 {
    let mut samples = [0u64; TIMER_SAMPLES];
    for s in samples.iter_mut() {
        let t0 = Instant::now();
        black_box(());
        *s = t0.elapsed().as_nanos() as u64;
    }
    samples.sort_unstable();
    samples[TIMER_SAMPLES / 2]
}

/// Allocates into every slot, timing each call; frees all in allocation order.
#[inline(never)]
fn timed_cycle<A: RawAlloc>(
    a: &A,
    slots: &mut [*mut u8],
    hist: &mut Histogram<u64>,
) -> Result<(), WorkloadError> {
    let mut failed = None;
    for (i, slot) in slots.iter_mut().enumerate() {
        let t0 = Instant::now();
        let p = black_box(a.alloc());
        let dt = t0.elapsed();
        hist.saturating_record(dt.as_nanos() as u64);
        if p.is_null() {
            failed = Some(i);
            break;
        }
        *slot = p;
    }
    finish_cycle(a, slots, failed)
}

/// The same cycle without any clock read.
#[inline(never)]
fn untimed_cycle<A: RawAlloc>(a: &A, slots: &mut [*mut u8]) -> Result<(), WorkloadError> {
    let mut failed = None;
    for (i, slot) in slots.iter_mut().enumerate() {
        let p = a.alloc();
        if p.is_null() {
            failed = Some(i);
            break;
        }
        *slot = p;
    }
    finish_cycle(a, slots, failed)
}

#[inline(always)]
fn free_all<A: RawAlloc>(a: &A, slots: &[*mut u8]) {
    for &p in slots {
        // SAFETY: every slot was just filled by a successful `a.alloc()` in this cycle and is
        // freed exactly once, here.
        unsafe { a.free(p) };
    }
}

/// Frees the cycle's objects in allocation order: all of them, or the first `failed` ones when
/// the allocation after them failed.
#[inline(always)]
fn finish_cycle<A: RawAlloc>(
    a: &A,
    slots: &[*mut u8],
    failed: Option<usize>,
) -> Result<(), WorkloadError> {
    match failed {
        None => {
            free_all(a, slots);
            Ok(())
        }
        Some(after) => {
            free_all(a, &slots[..after]);
            Err(WorkloadError::AllocFailed { after })
        }
    }
}

/// The latency workload, then the untimed throughput pass, on an allocator, histogram and
/// pointer array the caller set up beforehand.
pub fn run_latency<A: RawAlloc>(
    name: &str,
    a: &A,
    slots: &mut [*mut u8],
    hist: &mut Histogram<u64>,
    params: LatencyParams,
    timer_overhead_ns: u64,
) -> Result<LatencyResult, WorkloadError> {
    for _ in 0..params.warmup {
        untimed_cycle(a, slots)?;
    }
    for _ in 0..params.cycles {
        timed_cycle(a, slots, hist)?;
    }
    let start = Instant::now();
    for _ in 0..params.cycles {
        untimed_cycle(a, slots)?;
    }
    let secs = start.elapsed().as_secs_f64();
    let rss_end_bytes = temporal_slab::process_rss_bytes();
    if a.free_errors() > 0 {
        return Err(WorkloadError::FreeErrors(a.free_errors()));
    }
    let ops = u64::from(params.cycles) * slots.len() as u64 * 2;
    Ok(LatencyResult {
        allocator: name.to_owned(),
        p50_ns: hist.value_at_quantile(0.5),
        p99_ns: hist.value_at_quantile(0.99),
        p999_ns: hist.value_at_quantile(0.999),
        p9999_ns: hist.value_at_quantile(0.9999),
        max_ns: hist.max(),
        min_ns: hist.min(),
        mean_ns: hist.mean(),
        samples: hist.len(),
        ops_per_sec: if secs > 0.0 { ops as f64 / secs } else { 0.0 },
        throughput_ops: ops,
        throughput_secs: secs,
        timer_overhead_ns,
        cycles: params.cycles,
        warmup_cycles: params.warmup,
        live_objects: slots.len(),
        rss_end_bytes,
        slab_diag: a.diagnostics(),
    })
}

/// What a scaling child prints.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ScalingRun {
    /// Allocator name.
    pub allocator: String,
    /// Threads.
    pub threads: usize,
    /// Allocations + frees done by each thread in the measured part.
    pub ops_per_thread: u64,
    /// Objects allocated then freed per round.
    pub batch: usize,
    /// Wall time from the barrier to the last join, seconds.
    pub secs: f64,
    /// Total operations of all threads per second.
    pub ops_per_sec: f64,
    /// temporal-slab's class counters over the whole child (warm-up rounds included).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slab_diag: Option<SlabDiag>,
}

/// One thread of the scaling run: `rounds` rounds of `batch` allocations then frees.
fn scaling_rounds<A: RawAlloc>(
    a: &A,
    slots: &mut [*mut u8],
    rounds: u64,
) -> Result<(), WorkloadError> {
    for _ in 0..rounds {
        untimed_cycle(a, slots)?;
    }
    Ok(())
}

/// The scaling workload: `threads` threads, each doing `ops_per_thread` allocations + frees in
/// rounds of `batch` objects.
pub fn run_scaling<A: RawAlloc>(
    name: &str,
    a: &A,
    threads: usize,
    ops_per_thread: u64,
    batch: usize,
) -> Result<ScalingRun, WorkloadError> {
    let batch = batch.max(1);
    let rounds = (ops_per_thread / (2 * batch as u64)).max(1);
    let barrier = Barrier::new(threads + 1);
    let (secs, outcome) = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                let barrier = &barrier;
                s.spawn(move || {
                    let mut slots = new_slots(batch);
                    let warm = scaling_rounds(a, &mut slots, 1);
                    barrier.wait();
                    warm?;
                    scaling_rounds(a, &mut slots, rounds)
                })
            })
            .collect();
        barrier.wait();
        let start = Instant::now();
        let mut outcome = Ok(());
        for h in handles {
            let r = h.join().unwrap_or(Err(WorkloadError::ThreadPanicked));
            if outcome.is_ok() {
                outcome = r;
            }
        }
        (start.elapsed().as_secs_f64(), outcome)
    });
    outcome?;
    if a.free_errors() > 0 {
        return Err(WorkloadError::FreeErrors(a.free_errors()));
    }
    let per_thread = rounds * 2 * batch as u64;
    let total = per_thread * threads as u64;
    Ok(ScalingRun {
        allocator: name.to_owned(),
        threads,
        ops_per_thread: per_thread,
        batch,
        secs,
        ops_per_sec: if secs > 0.0 { total as f64 / secs } else { 0.0 },
        slab_diag: a.diagnostics(),
    })
}

/// What the RSS child prints.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RssResult {
    /// After creating the allocator, before any allocation.
    pub baseline_bytes: u64,
    /// After allocating `live_objects` objects and writing every byte of them.
    pub after_alloc_bytes: u64,
    /// After freeing all of them, their epoch still open.
    pub after_free_before_close_bytes: u64,
    /// After `epoch_advance()` and `epoch_close` of their epoch.
    pub after_close_bytes: u64,
    /// Slabs `epoch_close` recycled (pages returned with `MADV_DONTNEED`).
    pub slabs_recycled: u64,
    /// Slabs carved in total.
    pub slabs_carved: u64,
    /// Objects allocated.
    pub live_objects: usize,
    /// Object size, bytes.
    pub object_size: usize,
    /// Size of the harness's pointer array (resident before the baseline), bytes.
    pub pointer_array_bytes: usize,
}

/// Allocates one object per slot in `epoch` and writes every byte of it with `byte`, so its page
/// is resident.
fn fill(
    slab: &SlabAllocator,
    epoch: EpochId,
    slots: &mut [*mut u8],
    byte: u8,
) -> Result<(), WorkloadError> {
    for (i, slot) in slots.iter_mut().enumerate() {
        let p = slab
            .alloc_ptr(OBJECT_SIZE, epoch)
            .map_err(|_| WorkloadError::AllocFailed { after: i })?;
        // SAFETY: p is a fresh object of OBJECT_SIZE bytes, valid for writes and ours until we
        // free it.
        unsafe { std::ptr::write_bytes(p.as_ptr(), byte, OBJECT_SIZE) };
        *slot = p.as_ptr();
    }
    Ok(())
}

/// Frees every object of `slots`; a rejected free is [`WorkloadError::FreeErrors`].
fn free_checked(slab: &SlabAllocator, slots: &[*mut u8]) -> Result<(), WorkloadError> {
    let mut free_errors = 0u64;
    for &p in slots {
        match NonNull::new(p) {
            Some(p) if slab.free_ptr(p).is_ok() => {}
            _ => free_errors += 1,
        }
    }
    if free_errors > 0 {
        return Err(WorkloadError::FreeErrors(free_errors));
    }
    Ok(())
}

fn rss_now() -> Result<u64, WorkloadError> {
    temporal_slab::process_rss_bytes()
        .ok_or_else(|| WorkloadError::Setup("cannot read /proc/self/statm".into()))
}

/// The RSS workload (temporal-slab only).
pub fn run_rss(live: usize) -> Result<RssResult, WorkloadError> {
    let mut slots = new_slots(live);
    let slab = SlabAllocator::new()?;
    let epoch = slab.epoch_current();
    let baseline_bytes = rss_now()?;
    fill(&slab, epoch, &mut slots, 0xA5)?;
    black_box(&slots);
    let after_alloc_bytes = rss_now()?;
    free_checked(&slab, &slots)?;
    let after_free_before_close_bytes = rss_now()?;
    slab.epoch_advance()?;
    let slabs_recycled = slab.epoch_close(epoch)?;
    let after_close_bytes = rss_now()?;
    let slabs_carved = slab.stats().slabs_carved;
    Ok(RssResult {
        baseline_bytes,
        after_alloc_bytes,
        after_free_before_close_bytes,
        after_close_bytes,
        slabs_recycled,
        slabs_carved,
        live_objects: live,
        object_size: OBJECT_SIZE,
        pointer_array_bytes: live * std::mem::size_of::<*mut u8>(),
    })
}

/// What closing one big epoch cost ([`run_close`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CloseResult {
    /// Whether adjacent empty slabs were returned with one `madvise` per range.
    pub coalesce_madvise: bool,
    /// Bytes of objects allocated in the epoch (every byte written, so resident).
    pub epoch_bytes: u64,
    /// Slabs the close recycled.
    pub slabs_recycled: u64,
    /// `madvise` calls the close made.
    pub madvise_calls: u64,
    /// Wall time of the `epoch_close` call, ns.
    pub close_ns: u64,
    /// `close_ns / slabs_recycled`.
    pub ns_per_slab: f64,
    /// `close_ns` per MiB of slab pages returned.
    pub ns_per_mib: f64,
    /// Process RSS just before and just after the close, bytes.
    pub rss_before_close_bytes: u64,
    /// See `rss_before_close_bytes`.
    pub rss_after_close_bytes: u64,
}

/// The close-cost workload (temporal-slab only): fill one epoch with `bytes` of 128-byte
/// objects, writing every byte, free them all with the epoch open, open the next epoch, then
/// time `epoch_close` of the full one alone. With `coalesce` false the allocator makes one
/// `madvise` call per slab, as it did before ranges were coalesced.
pub fn run_close(bytes: usize, coalesce: bool) -> Result<CloseResult, WorkloadError> {
    let config = temporal_slab::Config::default()
        .track_rss(false)
        .coalesce_madvise(coalesce);
    let slab = SlabAllocator::with_config(config)?;
    let epoch = slab.epoch_current();
    let count = bytes.div_ceil(OBJECT_SIZE);
    let mut slots = new_slots(count);
    fill(&slab, epoch, &mut slots, 0x5A)?;
    free_checked(&slab, &slots)?;
    slab.epoch_advance()?;
    let before = slab.stats();
    let rss_before_close_bytes = rss_now()?;
    let t = Instant::now();
    let slabs_recycled = slab.epoch_close(epoch)?;
    let close_ns = t.elapsed().as_nanos() as u64;
    let rss_after_close_bytes = rss_now()?;
    let after = slab.stats();
    let recycled_bytes = slabs_recycled as f64 * temporal_slab::SLAB_SIZE as f64;
    Ok(CloseResult {
        coalesce_madvise: coalesce,
        epoch_bytes: (count * OBJECT_SIZE) as u64,
        slabs_recycled,
        madvise_calls: after.total_madvise_calls - before.total_madvise_calls,
        close_ns,
        ns_per_slab: close_ns as f64 / slabs_recycled.max(1) as f64,
        ns_per_mib: close_ns as f64 / (recycled_bytes / (1024.0 * 1024.0)).max(f64::MIN_POSITIVE),
        rss_before_close_bytes,
        rss_after_close_bytes,
    })
}
