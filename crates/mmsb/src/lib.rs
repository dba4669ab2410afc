//! MMSB: a versioned page store changed only by deltas (crate docs are written in full below).

pub mod delta;
pub mod error;
pub mod page;

pub use delta::{Body, Delta, Mask, Source};
pub use error::{Error, Result};
pub use page::{Location, Lsn, MAX_PAGE_SIZE, Page, PageId};
pub mod checkpoint;
pub mod frame;
pub mod tlog;
