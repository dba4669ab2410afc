//! The workloads of `bench mmsb` ([`Runner`]) and what each one times ([`describe`]).

use super::*;

/// What a workload's operation is, for the report's `notes` field of each result.
pub(super) fn describe(name: &str) -> String {
    let s = match name {
        "allocation/cpu_1kb" => {
            "create_page(1024) on a running bus (logs a CreatePage commit frame, Buffered); \
             MMSB.jl timed start + create + stop"
        }
        "delta/cpu_sparse" => {
            "update_page(page, buf) on a 1 KiB page alternating two buffers that differ in the \
             first 10 bytes (0xff vs 0x00): diff, log and apply a 10-byte sparse delta (Buffered)"
        }
        "delta/cpu_sparse_timings_on" => {
            "delta/cpu_sparse with the bus's own latency histograms on (Config::new's default)"
        }
        "delta/cpu_dense" => {
            "update_page(page, buf) on a 1 KiB page cycling random buffers that differ at every \
             byte: diff, log and apply a dense 1 KiB delta (Buffered)"
        }
        "propagation/single_hop" => {
            "update_page(parent, random 1 KiB) with parent -> child (Data edge, passthrough): the \
             parent's dense delta, the child's recompute, its logged dense delta, the commit frame"
        }
        "propagation/chain_10" => {
            "update_page(first, random 1 KiB) on a chain of 10 pages (passthrough each): 10 logged \
             dense deltas, 9 recomputes, one commit frame"
        }
        "propagation/batch_32x4" => {
            "begin_batch, 4 x update_page(first, random 1 KiB), commit, on a chain of 32 pages \
             (passthrough each): one wave of 31 recomputes at commit; one sample per batch"
        }
        "propagation/batch_128x2" => {
            "begin_batch, 2 x update_page(first, random 1 KiB), commit, on a chain of 128 pages: \
             one wave of 127 recomputes; one sample per batch"
        }
        "replay/100_epochs" => {
            "State::replay(dir, PageEpoch(page, 100)) of a log holding the page's creation and 100 \
             dense 1 KiB updates (flushed, page cache warm; the bus stays open)"
        }
        "persistence/checkpoint_100pages" => {
            "checkpoint() of 100 random 1 KiB pages: log sync, checkpoint file write + fsync, \
             rename, directory fsync; one page is updated (untimed) between samples so each \
             checkpoint has a new LSN"
        }
        "persistence/restore_100pages" => {
            "State::restore(dir) of a stopped bus's directory holding one checkpoint of 100 \
             random 1 KiB pages and an empty log suffix"
        }
        "graph/topological_sort_1024" => {
            "bus.graph().topological_order() of 1024 pages, page i -> i+1..=i+4: reads the order \
             Pearce-Kelly maintains on every add_dependency (allocates the 1024-entry Vec)"
        }
        "graph/topological_sort_1024_from_scratch" => {
            "petgraph::algo::toposort on the same graph as a DiGraph<(), ()> built once (a DFS \
             per call)"
        }
        "graph/add_edges_1024x4" => {
            "one add_dependency(i, j, Data) (incremental cycle check and order maintenance) while \
             building the 1024-node graph, edges added in increasing i then j; per edge"
        }
        "graph/add_edges_1024x4_reverse" => {
            "graph/add_edges_1024x4 with i decreasing (every new parent enters the order after \
             its children, so Pearce-Kelly reorders on every edge); per edge"
        }
        "log/deltas_buffered" => {
            "write_range(page, offset, 8 bytes) on a 4 KiB page, offsets cycling through the \
             page, all 8 bytes changed each time: one logged 8-byte sparse delta and commit \
             frame per call, Durability::Buffered; ops/s = deltas / wall time of an untimed loop, \
             percentiles from a separate timed pass"
        }
        "log/deltas_fsync1000" => "log/deltas_buffered with Durability::FsyncEvery(1000)",
        _ => "",
    };
    s.to_owned()
}

/// Runs the workloads one after the other, reporting progress with `progress`.
pub(super) struct Runner<'a> {
    pub(super) parent: PathBuf,
    pub(super) sizes: Sizes,
    pub(super) progress: &'a dyn Fn(&str),
    pub(super) results: Ordered<WorkloadResult>,
    pub(super) only: Option<String>,
}

impl Runner<'_> {
    /// True when `--only` selects the workload `name` (or is not given).
    fn wants(&self, name: &str) -> bool {
        runner_wants(self.only.as_deref(), name)
    }

    fn push(&mut self, name: &str, mut r: WorkloadResult) {
        r.notes = describe(name);
        (self.progress)(&format!(
            "{name}: p50 {} p99 {} ({} samples)",
            dur(r.p50_ns as f64),
            dur(r.p99_ns as f64),
            r.samples
        ));
        self.results.0.push((name.to_owned(), r));
    }

    fn fresh(&self) -> R<Fresh> {
        Fresh::new(&self.parent, Durability::Buffered, false)
    }

    pub(super) fn allocation(&mut self) -> R<()> {
        if !self.wants("allocation/cpu_1kb") {
            return Ok(());
        }
        let n = self.sizes.allocation_ops;
        let mut f = self.fresh()?;
        let (lat, ops) = run_repeated(warmup_of(n), n, |_| {
            black_box(f.bus.create_page(PAGE).ctx("create_page")?);
            Ok(())
        })?;
        self.push("allocation/cpu_1kb", lat.result(Some(ops), String::new()));
        Ok(())
    }

    /// `update_page` of one 1 KiB page cycling through `bufs`.
    fn delta(&mut self, name: &str, n: u64, bufs: &[Vec<u8>], timings: bool) -> R<()> {
        if !self.wants(name) {
            return Ok(());
        }
        let mut f = Fresh::new(&self.parent, Durability::Buffered, timings)?;
        let page = f.page(PAGE)?;
        let k = bufs.len() as u64;
        let warm = warmup_of(n);
        let before = f.log_bytes();
        let (lat, ops) = run_repeated(warm, n, |i| {
            changed(
                f.bus.update_page(page, &bufs[(i % k) as usize]),
                "update_page",
            )
        })?;
        let mut r = lat.result(Some(ops), String::new());
        r.log_bytes_per_op = Some(per_op(f.log_bytes() - before, warm + 2 * n));
        self.push(name, r);
        Ok(())
    }

    pub(super) fn deltas(&mut self) -> R<()> {
        let mut a = vec![0u8; PAGE];
        a[..10].fill(0xff);
        let sparse = [a, vec![0u8; PAGE]];
        self.delta(
            "delta/cpu_sparse",
            self.sizes.delta_sparse_ops,
            &sparse,
            false,
        )?;
        self.delta(
            "delta/cpu_sparse_timings_on",
            self.sizes.delta_sparse_ops,
            &sparse,
            true,
        )?;
        let dense = distinct_buffers(&mut Rng(1), PAGE);
        self.delta("delta/cpu_dense", self.sizes.delta_dense_ops, &dense, false)
    }

    /// `update_page` of the first page of a passthrough chain of `len` pages.
    fn chain(&mut self, name: &str, len: usize, n: u64) -> R<()> {
        if !self.wants(name) {
            return Ok(());
        }
        let mut f = self.fresh()?;
        let ids = f.chain(len, PAGE)?;
        let bufs = distinct_buffers(&mut Rng(len as u64), PAGE);
        let (first, last) = (ids[0], ids[len - 1]);
        let warm = warmup_of(n);
        let before = f.log_bytes();
        let (lat, ops) = run_repeated(warm, n, |i| {
            changed(
                f.bus.update_page(first, &bufs[(i % 3) as usize]),
                "update_page",
            )
        })?;
        let end = f.bus.query_page(last).ctx("query_page")?;
        if end.bytes() != f.bus.query_page(first).ctx("query_page")?.bytes() {
            return Err(format!(
                "{name}: the chain's last page does not follow the first"
            ));
        }
        let mut r = lat.result(Some(ops), String::new());
        r.log_bytes_per_op = Some(per_op(f.log_bytes() - before, warm + 2 * n));
        self.push(name, r);
        Ok(())
    }

    /// One batch of `updates` updates of the first page of a chain of `len`, committed.
    fn batch(&mut self, name: &str, len: usize, updates: u64, n: u64) -> R<()> {
        if !self.wants(name) {
            return Ok(());
        }
        // The buffers cycle with period 3 across batches; a batch size that is a multiple of 3
        // would end every batch on the same value and the wave would stop at the first child.
        assert!(
            !updates.is_multiple_of(3),
            "batch size must not be a multiple of 3"
        );
        let mut f = self.fresh()?;
        let ids = f.chain(len, PAGE)?;
        let bufs = distinct_buffers(&mut Rng(len as u64 * 31 + updates), PAGE);
        let expected = len - 1;
        let warm = warmup_of(n);
        let before = f.log_bytes();
        let mut k = 0u64;
        let (lat, ops) = run_repeated(warm, n, |_| {
            f.bus.begin_batch().ctx("begin_batch")?;
            for _ in 0..updates {
                changed(
                    f.bus.update_page(ids[0], &bufs[(k % 3) as usize]),
                    "update_page",
                )?;
                k += 1;
            }
            let c = f.bus.commit().ctx("commit")?;
            if c.propagated != expected {
                return Err(format!(
                    "{name}: commit propagated {} deltas, expected {expected}",
                    c.propagated
                ));
            }
            Ok(())
        })?;
        let mut r = lat.result(Some(ops), String::new());
        r.log_bytes_per_op = Some(per_op(f.log_bytes() - before, warm + 2 * n));
        self.push(name, r);
        Ok(())
    }

    pub(super) fn propagation(&mut self) -> R<()> {
        let s = self.sizes.clone();
        self.chain("propagation/single_hop", 2, s.single_hop_ops)?;
        self.chain("propagation/chain_10", 10, s.chain_10_ops)?;
        self.batch("propagation/batch_32x4", 32, 4, s.batch_32x4_ops)?;
        self.batch("propagation/batch_128x2", 128, 2, s.batch_128x2_ops)
    }

    pub(super) fn replay(&mut self) -> R<()> {
        if !self.wants("replay/100_epochs") {
            return Ok(());
        }
        let mut f = self.fresh()?;
        let page = f.page(PAGE)?;
        let mut rng = Rng(7);
        for _ in 0..REPLAY_EPOCHS {
            // Random bytes: the page changes almost everywhere each time (a dense delta).
            changed(f.bus.update_page(page, &rng.bytes(PAGE)), "update_page")?;
        }
        f.bus.flush().ctx("flush")?;
        let target = ReplayTarget::PageEpoch(page, REPLAY_EPOCHS);
        let live = f.bus.query_page(page).ctx("query_page")?.bytes().to_vec();
        let n = self.sizes.replay_reps;
        for _ in 0..warmup_of(n) {
            let s = State::replay(f.path(), target).ctx("State::replay")?;
            let p = s.page(page).ok_or("replay lost the page")?;
            if p.epoch() != REPLAY_EPOCHS || p.bytes() != live {
                return Err(
                    "replay/100_epochs: the replayed page differs from the live one".into(),
                );
            }
        }
        let mut lat = Lat::new()?;
        for _ in 0..n {
            let t0 = Instant::now();
            let s = State::replay(f.path(), target);
            lat.record(t0);
            black_box(s.ctx("State::replay")?);
        }
        self.push("replay/100_epochs", lat.result(None, String::new()));
        Ok(())
    }

    /// A bus with `PERSIST_PAGES` random 1 KiB pages.
    fn persist_bus(&self, seed: u64) -> R<(Fresh, Vec<PageId>)> {
        let mut f = self.fresh()?;
        let mut rng = Rng(seed);
        let mut ids = Vec::with_capacity(PERSIST_PAGES);
        for _ in 0..PERSIST_PAGES {
            let id = f.page(PAGE)?;
            changed(f.bus.update_page(id, &rng.bytes(PAGE)), "update_page")?;
            ids.push(id);
        }
        Ok((f, ids))
    }

    pub(super) fn persistence(&mut self) -> R<()> {
        if self.wants("persistence/checkpoint_100pages") {
            self.checkpoint()?;
        }
        if self.wants("persistence/restore_100pages") {
            self.restore()?;
        }
        Ok(())
    }

    fn checkpoint(&mut self) -> R<()> {
        let (mut f, ids) = self.persist_bus(11)?;
        settle_disk();
        let mut rng = Rng(12);
        let n = self.sizes.checkpoint_reps;
        let mut lat = Lat::new()?;
        for i in 0..warmup_of(n) + n {
            let id = ids[(i as usize) % ids.len()];
            changed(f.bus.update_page(id, &rng.bytes(PAGE)), "update_page")?;
            let t0 = Instant::now();
            let c = f.bus.checkpoint();
            if i >= warmup_of(n) {
                lat.record(t0);
            }
            black_box(c.ctx("checkpoint")?);
        }
        drop(f);
        self.push(
            "persistence/checkpoint_100pages",
            lat.result(None, String::new()),
        );
        Ok(())
    }

    fn restore(&mut self) -> R<()> {
        let (mut f, _) = self.persist_bus(13)?;
        f.bus.checkpoint().ctx("checkpoint")?;
        let expected = f.bus.state().hashes();
        let Fresh { bus, dir } = f;
        bus.stop().ctx("stop")?;
        let n = self.sizes.restore_reps;
        for _ in 0..warmup_of(n) {
            let s = State::restore(dir.path()).ctx("State::restore")?;
            if s.hashes() != expected {
                return Err("persistence/restore_100pages: the restored state differs".into());
            }
        }
        let mut lat = Lat::new()?;
        for _ in 0..n {
            let t0 = Instant::now();
            let s = State::restore(dir.path());
            lat.record(t0);
            black_box(s.ctx("State::restore")?);
        }
        self.push(
            "persistence/restore_100pages",
            lat.result(None, String::new()),
        );
        Ok(())
    }

    /// The edges of the graph workloads, parents increasing (or decreasing), as page indices.
    fn graph_edges(reverse: bool) -> Vec<(u64, u64)> {
        let mut e = Vec::new();
        for i in 0..GRAPH_NODES {
            for j in i + 1..=(i + GRAPH_FANOUT).min(GRAPH_NODES - 1) {
                e.push((i, j));
            }
        }
        if reverse {
            // Decreasing parents, children still increasing within one parent.
            e.sort_by_key(|&(i, j)| (std::cmp::Reverse(i), j));
        }
        e
    }

    /// A bus with the 1024 pages of the graph workloads (64 bytes each: their size is not used).
    fn graph_bus(&self) -> R<(Fresh, Vec<PageId>)> {
        let mut f = self.fresh()?;
        let ids = (0..GRAPH_NODES)
            .map(|_| f.page(64))
            .collect::<R<Vec<_>>>()?;
        Ok((f, ids))
    }

    fn add_edges(&mut self, name: &str, reverse: bool) -> R<()> {
        if !self.wants(name) {
            return Ok(());
        }
        let edges = Self::graph_edges(reverse);
        let mut lat = Lat::new()?;
        // One unrecorded build as warm-up.
        for b in 0..=self.sizes.add_edges_builds {
            let (mut f, ids) = self.graph_bus()?;
            for &(i, j) in &edges {
                let (p, c) = (ids[i as usize], ids[j as usize]);
                let t0 = Instant::now();
                let r = f.bus.add_dependency(p, c, EdgeKind::Data);
                if b > 0 {
                    lat.record(t0);
                }
                r.ctx("add_dependency")?;
            }
            if f.bus.graph().edge_count() != edges.len() {
                return Err(format!("{name}: the graph has the wrong number of edges"));
            }
        }
        self.push(name, lat.result(None, String::new()));
        Ok(())
    }

    pub(super) fn graph(&mut self) -> R<()> {
        if self.wants("graph/topological_sort_1024") {
            self.topo()?;
        }
        if self.wants("graph/topological_sort_1024_from_scratch") {
            self.topo_from_scratch()?;
        }
        self.add_edges("graph/add_edges_1024x4", false)?;
        self.add_edges("graph/add_edges_1024x4_reverse", true)
    }

    fn topo(&mut self) -> R<()> {
        let edges = Self::graph_edges(false);
        let (mut f, ids) = self.graph_bus()?;
        for &(i, j) in &edges {
            f.bus
                .add_dependency(ids[i as usize], ids[j as usize], EdgeKind::Data)
                .ctx("add_dependency")?;
        }
        let n = self.sizes.topo_reps;
        let (lat, ops) = run_repeated(warmup_of(n), n, |_| {
            let order = f.bus.graph().topological_order();
            if order.len() != GRAPH_NODES as usize {
                return Err("topological_order has the wrong length".into());
            }
            black_box(order);
            Ok(())
        })?;
        self.push(
            "graph/topological_sort_1024",
            lat.result(Some(ops), String::new()),
        );
        Ok(())
    }

    fn topo_from_scratch(&mut self) -> R<()> {
        let edges = Self::graph_edges(false);
        let n = self.sizes.topo_reps;
        let mut g =
            petgraph::graph::DiGraph::<(), ()>::with_capacity(GRAPH_NODES as usize, edges.len());
        let nodes: Vec<_> = (0..GRAPH_NODES).map(|_| g.add_node(())).collect();
        for &(i, j) in &edges {
            g.add_edge(nodes[i as usize], nodes[j as usize], ());
        }
        let (lat, ops) = run_repeated(warmup_of(n), n, |_| {
            let order = petgraph::algo::toposort(&g, None)
                .map_err(|_| "the graph has a cycle".to_owned())?;
            if order.len() != GRAPH_NODES as usize {
                return Err("toposort has the wrong length".into());
            }
            black_box(order);
            Ok(())
        })?;
        self.push(
            "graph/topological_sort_1024_from_scratch",
            lat.result(Some(ops), String::new()),
        );
        Ok(())
    }

    /// `write_range` of 8 changed bytes, `n` untimed then `timed` timed, on a 4 KiB page.
    fn log(&mut self, name: &str, durability: Durability, n: u64, timed: u64) -> R<()> {
        if !self.wants(name) {
            return Ok(());
        }
        let mut f = Fresh::new(&self.parent, durability, false)?;
        let page = f.page(LOG_PAGE)?;
        settle_disk();
        let slots = (LOG_PAGE / LOG_WRITE) as u64;
        // Write `i` goes to slot `i % slots` with every byte `(i / slots) + 1` (mod 256): each
        // write differs from the slot's previous contents in all 8 bytes.
        let write = |bus: &mut Mmsb, i: u64| {
            let off = ((i % slots) as usize) * LOG_WRITE;
            let v = ((i / slots) as u8).wrapping_add(1);
            changed(bus.write_range(page, off, &[v; LOG_WRITE]), "write_range")
        };
        let mut i = 0u64;
        for _ in 0..warmup_of(n) {
            write(&mut f.bus, i)?;
            i += 1;
        }
        let before = f.log_bytes();
        let t = Instant::now();
        for _ in 0..n {
            write(&mut f.bus, i)?;
            i += 1;
        }
        let wall = t.elapsed().as_secs_f64();
        let bytes = f.log_bytes() - before;
        let mut lat = Lat::new()?;
        for _ in 0..timed {
            let t0 = Instant::now();
            let r = write(&mut f.bus, i);
            lat.record(t0);
            r?;
            i += 1;
        }
        let mut r = lat.result(Some(n as f64 / wall), String::new());
        r.log_bytes_per_op = Some(bytes as f64 / n as f64);
        self.push(name, r);
        Ok(())
    }

    pub(super) fn logs(&mut self) -> R<()> {
        let s = self.sizes.clone();
        self.log(
            "log/deltas_buffered",
            Durability::Buffered,
            s.log_buffered_ops,
            s.log_buffered_timed_ops,
        )?;
        self.log(
            "log/deltas_fsync1000",
            Durability::FsyncEvery(1000),
            s.log_fsync_ops,
            s.log_fsync_timed_ops,
        )
    }
}
