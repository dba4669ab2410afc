//! Library part of the `mmsb` command-line tool, shared with the benchmark crate.
//!
//! [`trace`] applies real editing traces (josephg/editing-traces format) to an MMSB page store.

pub mod trace;
