//! Filling a `Py_buffer` for a read-only, one-dimensional view of bytes (format `B`).

use std::ffi::{c_int, c_void};
use std::ptr;

use pyo3::exceptions::PyBufferError;
use pyo3::ffi;
use pyo3::prelude::*;

/// The format string of every view: unsigned bytes. Static, so `__releasebuffer__` frees
/// nothing (CPython never writes through `format`).
const FORMAT: &std::ffi::CStr = c"B";

/// Refuses a request for a writable buffer, and a null view, before anything is exported.
pub(crate) fn check_request(view: *mut ffi::Py_buffer, flags: c_int) -> PyResult<()> {
    if view.is_null() {
        return Err(PyBufferError::new_err("null Py_buffer"));
    }
    if (flags & ffi::PyBUF_WRITABLE) == ffi::PyBUF_WRITABLE {
        return Err(PyBufferError::new_err(
            "page views are read-only: write through write_range or update",
        ));
    }
    Ok(())
}

/// Fills `view` as a read-only view of `len` bytes at `buf`, owned by `owner`.
///
/// # Safety
/// `view` must be a valid, writable `Py_buffer` (non-null: [`check_request`] checked it), and
/// the `len` bytes at `buf` must stay valid and unchanged until `owner`'s `__releasebuffer__`
/// runs for this view.
pub(crate) unsafe fn fill(
    view: *mut ffi::Py_buffer,
    flags: c_int,
    buf: *const u8,
    len: usize,
    owner: Bound<'_, PyAny>,
) {
    // SAFETY: the caller guarantees `view` is valid and writable; the fields set here are the
    // ones `PyBuffer_FillInfo` sets, `shape`/`strides` pointing into the view itself (valid as
    // long as the view is, which is what CPython requires of them).
    unsafe {
        (*view).obj = owner.into_ptr();
        (*view).buf = buf.cast_mut().cast::<c_void>();
        (*view).len = isize::try_from(len).unwrap_or(isize::MAX);
        (*view).readonly = 1;
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
