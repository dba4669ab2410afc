//! Dependencies and propagation: edges, recompute functions, and the propagation wave that
//! keeps derived pages current (invariant 5 of the crate doc).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::Arc;
use std::time::Instant;

use petgraph::acyclic::TopologicalPosition;

use super::{Mmsb, elapsed_ns};
use crate::delta::{Delta, Source};
use crate::error::{Error, Result};
use crate::events::{Event, EventKind};
use crate::frame::BodyRef;
use crate::graph::EdgeKind;
use crate::page::PageId;
use crate::stats::record;

impl Mmsb {
    /// Adds the dependency `parent -> child`.
    ///
    /// # Errors
    /// [`Error::NoSuchPage`] for either page; [`Error::Cycle`] when the edge would close a
    /// cycle (checked incrementally; the graph is unchanged).
    pub fn add_dependency(&mut self, parent: PageId, child: PageId, kind: EdgeKind) -> Result<()> {
        self.state.page(parent).ok_or(Error::NoSuchPage(parent))?;
        self.state.page(child).ok_or(Error::NoSuchPage(child))?;
        self.graph.add_edge(parent, child, kind)
    }

    /// Registers the function that computes `child` from its data parents (in edge order). The
    /// function gets the child's current bytes to overwrite; it must be deterministic (replay
    /// never calls it: it applies the deltas it produced). The child is not recomputed now; it is
    /// recomputed when a parent changes, or by [`Mmsb::recompute_now`].
    ///
    /// # Errors
    /// [`Error::NoSuchPage`].
    pub fn register_recompute(
        &mut self,
        child: PageId,
        f: impl Fn(&[&[u8]], &mut [u8]) + Send + Sync + 'static,
    ) -> Result<()> {
        self.state.page(child).ok_or(Error::NoSuchPage(child))?;
        let i = child.0 as usize;
        if i >= self.recompute.len() {
            self.recompute.resize_with(i + 1, || None);
        }
        self.recompute[i] = Some(Arc::new(f));
        Ok(())
    }

    /// Recomputes `pages` (and, as usual, whatever depends on what changed) in one wave, and
    /// commits (outside a batch). Use after a restart or after registering a function.
    ///
    /// # Errors
    /// Log write errors.
    ///
    /// # Panics
    /// If a recompute function panics.
    pub fn recompute_now(&mut self, pages: &[PageId]) -> Result<usize> {
        self.check_poison()?;
        let n = self.propagate_from(pages, true)?;
        if !self.in_batch && n > 0 {
            self.append(PageId(0), 0, Source::User, true, BodyRef::Commit)?;
            self.committed();
            if self.subs.wants(EventKind::PageChanged) {
                self.emit_changed();
            }
        } else if self.in_batch {
            self.batch_frames += n;
        }
        Ok(n)
    }

    pub(super) fn propagate(&mut self, roots: &[PageId]) -> Result<usize> {
        self.propagate_from(roots, false)
    }

    /// One propagation wave. Pages are visited in the maintained topological order through a
    /// min-heap keyed by topological position: when a page is popped, every page that can still
    /// be pushed is a descendant of a page popped no earlier, so it comes later in the order.
    /// Each page is therefore recomputed at most once per wave, after all its affected parents
    /// (no glitches). A recompute whose output equals the page stops the wave there (early
    /// cutoff). Returns the number of deltas written.
    fn propagate_from(&mut self, roots: &[PageId], include_roots: bool) -> Result<usize> {
        let t = self.timings.enabled.then(Instant::now);
        self.wave += 1;
        let wave = self.wave;
        self.counters.waves += 1;
        let mut heap: BinaryHeap<Reverse<(Option<TopologicalPosition>, PageId)>> =
            BinaryHeap::new();
        let need = self.state.next_page_id() as usize;
        if self.stamp.len() < need {
            self.stamp.resize(need, 0);
        }
        for &r in roots {
            if include_roots {
                self.schedule(&mut heap, r, EdgeKind::Data, wave);
            } else {
                self.schedule_children(&mut heap, r, wave);
            }
        }
        let mut written = 0usize;
        while let Some(Reverse((_, id))) = heap.pop() {
            let Some(f) = self.recompute.get(id.0 as usize).and_then(Clone::clone) else {
                self.mark_stale(id);
                continue;
            };
            if self.subs.wants(EventKind::PageInvalidated) {
                self.subs.emit(&Event::PageInvalidated { page: id });
            }
            let mut scratch = std::mem::take(&mut self.scratch);
            {
                let page = self.state.page(id).ok_or(Error::NoSuchPage(id))?;
                scratch.clear();
                scratch.extend_from_slice(&page.bytes);
                let parents: Vec<&[u8]> = self
                    .graph
                    .data_parents(id)
                    .iter()
                    .map(|p| self.state.page(*p).map_or(&[][..], |pg| &pg.bytes[..]))
                    .collect();
                f(&parents, &mut scratch);
            }
            self.counters.recomputes += 1;
            let page = self.state.page(id).ok_or(Error::NoSuchPage(id))?;
            let delta = Delta::diff(id, &page.bytes, &scratch);
            self.scratch = scratch;
            match delta {
                None => self.counters.cutoffs += 1,
                Some(mut d) => {
                    d.source = Source::Propagation;
                    self.log_and_apply(&mut d, false)?;
                    self.counters.propagation_deltas += 1;
                    self.counters.propagation_delta_bytes += d.payload().len() as u64;
                    written += 1;
                    if self.subs.wants(EventKind::PageChanged) {
                        self.changed.push(id);
                    }
                    self.schedule_children(&mut heap, id, wave);
                }
            }
        }
        if let Some(t) = t {
            record(&mut self.timings.wave, elapsed_ns(t));
        }
        Ok(written)
    }

    fn schedule_children(
        &mut self,
        heap: &mut BinaryHeap<Reverse<(Option<TopologicalPosition>, PageId)>>,
        id: PageId,
        wave: u64,
    ) {
        let n = self.graph.children(id).len();
        for i in 0..n {
            let (c, kind) = self.graph.children(id)[i];
            self.schedule(heap, c, kind, wave);
        }
    }

    fn schedule(
        &mut self,
        heap: &mut BinaryHeap<Reverse<(Option<TopologicalPosition>, PageId)>>,
        c: PageId,
        kind: EdgeKind,
        wave: u64,
    ) {
        match kind {
            EdgeKind::Control => self.mark_stale(c),
            EdgeKind::Data => {
                let i = c.0 as usize;
                if i >= self.stamp.len() {
                    self.stamp.resize(i + 1, 0);
                }
                if self.stamp[i] == wave {
                    return;
                }
                self.stamp[i] = wave;
                // A page without edges (only possible as an explicit root) has no position; it
                // has no parents or children either, so it may run first.
                heap.push(Reverse((self.graph.position(c), c)));
            }
        }
    }

    fn mark_stale(&mut self, id: PageId) {
        if let Some(p) = self.state.page_mut(id)
            && !p.stale
        {
            p.stale = true;
            self.counters.stale_marks += 1;
            if self.subs.wants(EventKind::PageStale) {
                self.subs.emit(&Event::PageStale { page: id });
            }
        }
    }
}
