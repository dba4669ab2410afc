//! The demo workload (being written).
