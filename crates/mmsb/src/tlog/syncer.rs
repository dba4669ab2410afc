//! The group-commit syncer: under [`Durability::GroupCommit`], a background thread that
//! `fdatasync`s the active segment at most once per interval, for the writer ([`TLog`]).

use super::*;

/// State shared with the group-commit thread.
#[derive(Debug)]
pub(super) struct GroupState {
    /// The active segment.
    pub(super) file: Arc<File>,
    /// Something was written since the last sync was started.
    pub(super) dirty: bool,
    /// Last LSN written when `dirty` was last set.
    pub(super) dirty_lsn: u64,
    /// Last LSN known synced.
    pub(super) durable_lsn: u64,
    pub(super) stop: bool,
    pub(super) fsyncs: u64,
    pub(super) error: Option<String>,
}

#[derive(Debug)]
pub(super) struct GroupShared {
    pub(super) state: Mutex<GroupState>,
    pub(super) cv: Condvar,
}

#[derive(Debug)]
pub(super) struct Group {
    pub(super) shared: Arc<GroupShared>,
    pub(super) handle: Option<JoinHandle<()>>,
}

pub(super) fn group_thread(shared: &GroupShared, interval: Duration) {
    let mut st = lock(&shared.state);
    loop {
        while !st.dirty && !st.stop {
            st = shared.cv.wait(st).unwrap_or_else(PoisonError::into_inner);
        }
        if !st.dirty {
            break; // stopping, nothing left to sync
        }
        st.dirty = false;
        let file = Arc::clone(&st.file);
        let lsn = st.dirty_lsn;
        drop(st);
        let r = file.sync_data();
        st = lock(&shared.state);
        match r {
            Ok(()) => {
                st.fsyncs += 1;
                st.durable_lsn = st.durable_lsn.max(lsn);
            }
            Err(e) => {
                st.error
                    .get_or_insert_with(|| format!("group commit fdatasync: {e}"));
            }
        }
        let deadline = Instant::now() + interval;
        while !st.stop {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            st = shared
                .cv
                .wait_timeout(st, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }
}
