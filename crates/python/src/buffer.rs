//! Filling a `Py_buffer` for a one-dimensional view of bytes (format `B`): the one place the
//! slots of `memsys.datahub` and the pages of `memsys.mmsb` export memory from.

use std::ffi::{c_int, c_void};
use std::ptr;

use pyo3::exceptions::PyBufferError;
use pyo3::ffi;
use pyo3::prelude::*;

/// The format string of every view: unsigned bytes. Static, so `__releasebuffer__` frees
/// nothing (CPython never writes through `format`).
const FORMAT: &std::ffi::CStr = c"B";

/// Refuses a null view, and, for a read-only export (`read_only` says why it is), a request
/// for a writable buffer, before anything is exported.
pub(crate) fn check_request(
    view: *mut ffi::Py_buffer,
    flags: c_int,
    read_only: Option<&str>,
) -> PyResult<()> {
    if view.is_null() {
        return Err(PyBufferError::new_err("null Py_buffer"));
    }
    if let Some(why) = read_only {
        if (flags & ffi::PyBUF_WRITABLE) == ffi::PyBUF_WRITABLE {
            return Err(PyBufferError::new_err(why.to_owned()));
        }
    }
    Ok(())
}

/// Fills `view` as a view of `len` bytes at `buf` (read-only or writable), owned by `owner`.
///
/// # Safety
/// `view` must be a valid, writable `Py_buffer` (non-null: [`check_request`] checked it, with
/// `read_only` set for a read-only export); the `len` bytes at `buf` must stay valid until
/// `owner`'s `__releasebuffer__` runs for this view, unchanged by anyone else for a read-only
/// view, and neither read nor written by anyone else for a writable one.
pub(crate) unsafe fn fill(
    view: *mut ffi::Py_buffer,
    flags: c_int,
    buf: *const u8,
    len: usize,
    read_only: bool,
    owner: Bound<'_, PyAny>,
) {
    // SAFETY: the caller guarantees `view` is valid and writable; the fields set here are the
    // ones `PyBuffer_FillInfo` sets, `shape`/`strides` pointing into the view itself (valid as
    // long as the view is, which is what CPython requires of them).
    unsafe {
        (*view).obj = owner.into_ptr();
        (*view).buf = buf.cast_mut().cast::<c_void>();
        (*view).len = isize::try_from(len).unwrap_or(isize::MAX);
        (*view).readonly = c_int::from(read_only);
        (*view).itemsize = 1;
        (*view).format = if (flags & ffi::PyBUF_FORMAT) == ffi::PyBUF_FORMAT {
            FORMAT.as_ptr().cast_mut()
        } else {
            ptr::null_mut()
        };
        (*view).ndim = 1;
        (*view).shape = if (flags & ffi::PyBUF_ND) == ffi::PyBUF_ND {
            &raw mut (*view).len
        } else {
            ptr::null_mut()
        };
        (*view).strides = if (flags & ffi::PyBUF_STRIDES) == ffi::PyBUF_STRIDES {
            &raw mut (*view).itemsize
        } else {
            ptr::null_mut()
        };
        (*view).suboffsets = ptr::null_mut();
        (*view).internal = ptr::null_mut();
    }
}
