//! The dependency graph: pages are nodes, edges say "the child is computed from the parent".
//!
//! Cycles are refused when an edge is added, incrementally: the graph is a petgraph
//! [`Acyclic`] wrapper, which keeps a topological order up to date with the dynamic topological
//! sort of Pearce and Kelly ("A Dynamic Topological Sort Algorithm for Directed Acyclic Graphs",
//! ACM JEA 11, 2006), so adding an edge costs work proportional to the region of the order it
//! reorders, not a DFS over the whole graph. Propagation reads the same order.

use petgraph::acyclic::{Acyclic, AcyclicEdgeError, TopologicalPosition};
use petgraph::data::Build;
use petgraph::graph::{DiGraph, NodeIndex};

use crate::error::{Error, Result};
use crate::page::PageId;

/// The kind of a dependency edge.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[non_exhaustive]
pub enum EdgeKind {
    /// The child's bytes are computed from the parent's: a change of the parent recomputes the
    /// child (once per commit), and the parent is an input of the child's recompute function.
    Data,
    /// The child depends on the parent but is not recomputed: a change of the parent marks the
    /// child stale ([`crate::Page::is_stale`], event `PageStale`) until the child is written.
    /// Control parents are not inputs of the recompute function.
    Control,
}

#[derive(Debug, Default, Clone)]
pub(crate) struct Node {
    pub(crate) index: Option<NodeIndex>,
    /// Data parents, in the order the edges were added (the recompute function's input order).
    pub(crate) data_parents: Vec<PageId>,
    pub(crate) children: Vec<(PageId, EdgeKind)>,
    /// Number of `Control` parents.
    pub(crate) control_parents: usize,
}

/// The dependency graph. Node information is indexed by page id.
#[derive(Debug, Default)]
pub struct Graph {
    dag: Acyclic<DiGraph<PageId, EdgeKind>>,
    nodes: Vec<Node>,
    edges: usize,
    with_edges: usize,
}

impl Graph {
    /// An empty graph.
    #[must_use]
    pub fn new() -> Graph {
        Graph::default()
    }

    fn slot(&mut self, id: PageId) -> &mut Node {
        let i = usize::try_from(id.0).unwrap_or(usize::MAX);
        if i >= self.nodes.len() {
            self.nodes.resize_with(i + 1, Node::default);
        }
        &mut self.nodes[i]
    }

    /// The node of `id`, adding nodes for every page id up to it first, in id order. Pages are
    /// usually created before the pages computed from them, so adding nodes in id order puts
    /// parents before children in the initial order, and the common edge needs no reordering
    /// (a parent added after its children would make Pearce-Kelly shift them on every edge).
    fn index_of(&mut self, id: PageId) -> NodeIndex {
        if let Some(ix) = self.slot(id).index {
            return ix;
        }
        let upto = usize::try_from(id.0).unwrap_or(usize::MAX);
        for i in 1..=upto {
            if self.nodes[i].index.is_none() {
                let ix = self.dag.add_node(PageId(i as u64));
                self.nodes[i].index = Some(ix);
            }
        }
        self.slot(id).index.expect("added above")
    }

    fn has_edges(&self, id: PageId) -> bool {
        self.node(id).is_some_and(|n| {
            !n.children.is_empty() || !n.data_parents.is_empty() || n.control_parents > 0
        })
    }

    pub(crate) fn node(&self, id: PageId) -> Option<&Node> {
        self.nodes.get(usize::try_from(id.0).ok()?)
    }

    /// Adds `parent -> child`.
    ///
    /// # Errors
    /// [`Error::Cycle`] when the edge would close a cycle or is a self-loop; the graph is
    /// unchanged. Adding an edge that already exists is a no-op.
    pub fn add_edge(&mut self, parent: PageId, child: PageId, kind: EdgeKind) -> Result<()> {
        if parent == child {
            return Err(Error::Cycle { parent, child });
        }
        if self
            .node(parent)
            .is_some_and(|n| n.children.iter().any(|&(c, k)| c == child && k == kind))
        {
            return Ok(());
        }
        let a = self.index_of(parent);
        let b = self.index_of(child);
        match self.dag.try_add_edge(a, b, kind) {
            Ok(_) => {}
            Err(AcyclicEdgeError::Cycle(_) | AcyclicEdgeError::SelfLoop) => {
                return Err(Error::Cycle { parent, child });
            }
            Err(AcyclicEdgeError::InvalidEdge) => return Err(Error::Cycle { parent, child }),
        }
        let p_new = !self.has_edges(parent);
        let c_new = !self.has_edges(child);
        self.slot(parent).children.push((child, kind));
        if kind == EdgeKind::Data {
            self.slot(child).data_parents.push(parent);
        } else {
            self.slot(child).control_parents += 1;
        }
        self.with_edges += usize::from(p_new) + usize::from(c_new);
        self.edges += 1;
        Ok(())
    }

    /// The position of `id` in the maintained topological order (`None` for a page id above
    /// every page that has an edge). Parents always come before their children.
    #[must_use]
    pub fn position(&self, id: PageId) -> Option<TopologicalPosition> {
        let ix = self.node(id)?.index?;
        Some(self.dag.get_position(ix))
    }

    /// Pages with at least one edge, in topological order (parents first).
    #[must_use]
    pub fn topological_order(&self) -> Vec<PageId> {
        self.dag
            .nodes_iter()
            .map(|ix| self.dag[ix])
            .filter(|&id| self.has_edges(id))
            .collect()
    }

    /// Number of pages with at least one edge.
    #[must_use]
    pub fn node_count(&self) -> usize {
        self.with_edges
    }

    /// Number of edges.
    #[must_use]
    pub fn edge_count(&self) -> usize {
        self.edges
    }

    /// Data parents of `id` in edge order.
    #[must_use]
    pub fn data_parents(&self, id: PageId) -> &[PageId] {
        self.node(id).map_or(&[], |n| &n.data_parents)
    }

    /// Children of `id` with their edge kinds, in edge order.
    #[must_use]
    pub fn children(&self, id: PageId) -> &[(PageId, EdgeKind)] {
        self.node(id).map_or(&[], |n| &n.children)
    }

    /// Length in edges of the longest path (0 for a graph without edges).
    #[must_use]
    pub fn depth(&self) -> usize {
        let order = self.topological_order();
        let mut depth = vec![0usize; self.nodes.len()];
        let mut best = 0;
        for id in order {
            let d = depth[id.0 as usize];
            best = best.max(d);
            for &(c, _) in self.children(id) {
                let slot = &mut depth[c.0 as usize];
                *slot = (*slot).max(d + 1);
            }
        }
        best
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cycles_are_refused_and_leave_the_graph_unchanged() {
        let mut g = Graph::new();
        g.add_edge(PageId(1), PageId(2), EdgeKind::Data).unwrap();
        g.add_edge(PageId(2), PageId(3), EdgeKind::Data).unwrap();
        assert!(matches!(
            g.add_edge(PageId(3), PageId(1), EdgeKind::Control),
            Err(Error::Cycle {
                parent: PageId(3),
                child: PageId(1)
            })
        ));
        assert!(matches!(
            g.add_edge(PageId(2), PageId(2), EdgeKind::Data),
            Err(Error::Cycle { .. })
        ));
        assert_eq!(g.edge_count(), 2);
        assert_eq!(g.children(PageId(3)), &[]);
        assert_eq!(g.topological_order(), vec![PageId(1), PageId(2), PageId(3)]);
        assert_eq!(g.depth(), 2);
    }

    #[test]
    fn order_is_updated_when_an_edge_reverses_it() {
        let mut g = Graph::new();
        g.add_edge(PageId(1), PageId(2), EdgeKind::Data).unwrap();
        g.add_edge(PageId(3), PageId(4), EdgeKind::Data).unwrap();
        g.add_edge(PageId(4), PageId(1), EdgeKind::Data).unwrap();
        let pos = |p| g.position(PageId(p)).unwrap();
        assert!(pos(3) < pos(4) && pos(4) < pos(1) && pos(1) < pos(2));
        assert_eq!(g.data_parents(PageId(1)), &[PageId(4)]);
    }
}
