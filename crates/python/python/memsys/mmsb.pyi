"""memsys.mmsb: a versioned page store changed only by deltas, with a write-ahead log.

All state lives in pages: fixed-size byte arrays, each with an epoch (the number of deltas
applied to it). Every change is a frame in the write-ahead log before it touches a page; every
frame has an LSN (log sequence number), strictly increasing by one. Derived pages are kept
current by Python recompute functions over their parents' bytes; checkpoints bound recovery;
replay rebuilds any past state from the log.

Units: sizes and offsets in bytes; LSNs, page ids and epochs are ints; timestamps are
nanoseconds since the Unix epoch (``*_ns``) or float seconds (``time=``); durations in seconds.

Threads and the GIL: every bus method releases the GIL while the bus works (log writes, fsync,
replay, waiting for another thread's call) and takes it back only to run a recompute function.

Views: ``memoryview(page)`` (or ``page.view()``) is a zero-copy read-only view of a page's bytes.
As with ``mmap``, while a view (or anything made from one, e.g. ``numpy.frombuffer``) is alive,
any write that would change those bytes (a write to the page or to a page it is derived from)
and ``Bus.close`` raise ``BufferError``; release the view (``del``, ``mv.release()``, ``with
memoryview(page):``) and retry.
"""

import builtins
from collections.abc import Callable, Iterable
from os import PathLike
from pathlib import Path
from types import TracebackType
from typing import Final, Literal, TypedDict, final, type_check_only

from typing_extensions import Buffer

from . import MemsysError

__all__ = [
    "MmsbError",
    "IoError",
    "LockedError",
    "BadMagicError",
    "UnsupportedVersionError",
    "CorruptFrameError",
    "DamagedTailError",
    "NotRegularFileError",
    "NotALogError",
    "CorruptLogIdError",
    "ForeignCheckpointError",
    "StateUnrecoverableError",
    "CorruptCheckpointError",
    "NoSuchPageError",
    "PageExistsError",
    "InvalidPageSizeError",
    "SizeMismatchError",
    "OutOfBoundsError",
    "MaskPayloadMismatchError",
    "PageMismatchError",
    "CycleError",
    "DerivedError",
    "InconsistentError",
    "DiffShapeError",
    "TargetBeyondLogError",
    "ReplayMismatchError",
    "PoisonedError",
    "BatchError",
    "FrameTooLargeError",
    "MetadataKeyTooLongError",
    "LogFailedError",
    "ReadOnlyError",
    "IsReplicaError",
    "ReplicaFrameError",
    "PrunedError",
    "Bus",
    "Page",
    "Batch",
    "ParentView",
    "State",
    "StatePage",
    "log_verify",
    "log_frames",
    "replay",
    "MAX_PAGE_SIZE",
]

MAX_PAGE_SIZE: Final[int]
"""The largest page, bytes (1 GiB)."""

_StrPath = str | PathLike[str]
_PageLike = Page | int
"""A page: a ``Page`` object or its int id."""

_Durability = str
"""``"buffered"`` (write at buffer full/flush/close), ``"flush"`` (write(2) at each commit,
default), ``"fsync"`` (fdatasync at each commit), ``"fsync:N"`` (every N-th commit),
``"group"`` (a background fdatasync at most every 5 ms), ``"group:MS"`` (every MS ms)."""

@type_check_only
class Percentiles(TypedDict):
    count: int
    p50_ns: int
    p99_ns: int
    p999_ns: int
    max_ns: int
    sum_ns: int
    """The histogram's mean times ``count`` (within 0.1% of the true sum)."""

@type_check_only
class Stats(TypedDict):
    pages: int
    page_bytes: int
    deltas: int
    delta_bytes: int
    propagation_deltas: int
    propagation_delta_bytes: int
    """Bytes the propagation deltas changed (part of ``delta_bytes``)."""
    commits: int
    waves: int
    recomputes: int
    cutoffs: int
    stale_marks: int
    graph_nodes: int
    graph_edges: int
    graph_depth: int
    last_lsn: int
    durable_lsn: int
    """The highest LSN known to be on stable storage (everything recovered at start counts):
    at most ``last_lsn``, equal to it after ``sync()``."""
    log_frames: int
    log_bytes: int
    log_syncs: int
    log_write_errors: int
    """Log appends, flushes and syncs that failed with an I/O error since start."""
    recovery_truncated_frames: int
    """Frames of an uncommitted batch recovery dropped when this bus started (0: clean)."""
    recovery_truncated_bytes: int
    """Bytes recovery cut off the log's end when this bus started (0: clean)."""
    delta_apply: Percentiles
    log_append: Percentiles
    propagation: Percentiles

@type_check_only
class Truncation(TypedDict):
    file: str
    offset: int
    bytes_dropped: int
    frames_dropped: int
    reason: str

@type_check_only
class StartReport(TypedDict):
    last_lsn: int
    segments: int
    frames: int
    truncated: Truncation | None
    checkpoint_lsn: int | None
    skipped_checkpoints: list[tuple[str, str]]
    pages: int

@type_check_only
class CheckpointInfo(TypedDict):
    path: str
    lsn: int
    pages: int
    bytes: int

@type_check_only
class CommitInfo(TypedDict):
    lsn: int
    """LSN of the commit frame (0 for an empty batch)."""
    deltas: int
    """Deltas written by the batch's writes."""
    propagated: int
    """Deltas written by recompute functions in the commit's propagation wave."""

@type_check_only
class Frame(TypedDict, total=False):
    """One log frame (``log_frames``). Always: lsn, kind, page, epoch, timestamp_ns, source,
    commit, file, offset, length, mask_encoding. ``delta``: dense, payload_bytes.
    ``create_page``: size, location. ``metadata``: key, value."""

    lsn: int
    kind: Literal["delta", "create_page", "metadata", "commit"]
    page: int
    epoch: int
    """For a delta: the page's epoch after it."""
    timestamp_ns: int
    source: Literal["user", "propagation", "import", "unknown"]
    commit: bool
    file: str
    offset: int
    """Byte offset of the frame in its segment file."""
    length: int
    """Encoded frame length, bytes."""
    mask_encoding: Literal["dense", "bit_packed", "run_length"]
    dense: bool
    payload_bytes: int
    size: int
    location: str
    key: str
    value: bytes | None

@type_check_only
class SegmentSummary(TypedDict):
    file: str
    first_lsn: int
    frames: int
    first_frame: int | None
    last_frame: int | None
    bytes: int
    uncommitted: int

@type_check_only
class Problem(TypedDict):
    file: str
    offset: int
    reason: str
    tail: bool
    """True for a torn tail that recovery cuts off without losing a commit."""
    lsn: int | None
    """The LSN the bad frame should have had, when known."""

@type_check_only
class VerifyReport(TypedDict):
    ok: bool
    frames: int
    last_lsn: int
    segments: list[SegmentSummary]
    problems: list[Problem]

@final
class Bus:
    """A live bus over one log directory (an exclusive lock). Use as a context manager, or call
    ``close()``."""

    @staticmethod
    def start(
        dir: _StrPath,
        durability: _Durability = "flush",
        *,
        segment_bytes: int | None = None,
        buffer_bytes: int | None = None,
        lock_timeout: float = 1.0,
        create: bool = True,
        timings: bool = True,
        prune_after_checkpoint: bool = False,
    ) -> Bus:
        """Opens (or creates) the log in ``dir``, recovers it (a torn or uncommitted tail is cut
        and reported in ``start_report``) and restores the state. Dependencies and recompute
        functions are not persisted: register them again.

        Raises ``ValueError`` (bad durability), ``LockedError`` (another writer after
        ``lock_timeout`` s), ``CorruptFrameError``/``DamagedTailError`` (damaged log, nothing
        changed), ``NotALogError``, ``StateUnrecoverableError``, ``ReplayMismatchError``,
        ``IoError``."""
    @property
    def start_report(self) -> StartReport: ...
    @property
    def durability(self) -> str: ...
    @property
    def dir(self) -> Path:
        """The log directory."""
    @property
    def closed(self) -> bool: ...
    @property
    def last_lsn(self) -> int:
        """LSN of the last frame written."""
    def create_page(self, size: int) -> Page:
        """A new zeroed page of ``size`` bytes (1..=MAX_PAGE_SIZE), epoch 0. Raises
        ``InvalidPageSizeError``, ``PoisonedError``, ``IoError``."""
    def page(self, id: int) -> Page:
        """The page ``id``. Raises ``NoSuchPageError``."""
    def pages(self) -> list[Page]:
        """Every page, in id order."""
    def add_dependency(
        self, parent: _PageLike, child: _PageLike, kind: Literal["data", "control"] = "data"
    ) -> None:
        """Adds ``parent -> child``. ``data``: the parent is an input of the child's recompute
        function; ``control``: a change of the parent marks the child stale. Raises
        ``NoSuchPageError``, ``CycleError`` (graph unchanged)."""
    def register_recompute(
        self, page: _PageLike, fn: Callable[[list[memoryview]], Buffer | None]
    ) -> None:
        """Makes ``page`` derived. After each commit that changes a data parent, ``fn(parents)``
        runs with the GIL held; ``parents`` are read-only memoryviews of the data parents' bytes
        in edge order, valid during the call (released after it; a buffer made from one pins
        its page like a ``Page`` view). ``fn`` returns at most ``page.size`` bytes (they
        overwrite the start of the page) or None (no change). ``fn`` must not call into the bus
        (``MmsbError``). An exception from ``fn`` is raised by the write that triggered it (a
        wrong return value: ``TypeError``/``ValueError``); that write is already committed and
        the derived page keeps its bytes. Raises ``NoSuchPageError``, ``TypeError``."""
    def recompute_now(self, pages: Iterable[_PageLike]) -> int:
        """Recomputes ``pages`` and their dependants in one wave and commits; returns the number
        of deltas written. Raises ``BufferError`` (a view is alive), log errors."""
    def batch(self) -> Batch:
        """A batch of writes applied as one commit: ``with bus.batch() as b: ...``."""
    def checkpoint(self) -> CheckpointInfo:
        """Syncs the log and writes a checkpoint of every page at the current LSN (GIL released).
        Raises ``IoError``."""
    def flush(self) -> None:
        """Writes buffered frames to the file (not fsynced)."""
    def sync(self) -> None:
        """Writes and fsyncs the log (GIL released)."""
    def replay_to(
        self,
        *,
        lsn: int | None = None,
        page: _PageLike | None = None,
        epoch: int | None = None,
        time: float | None = None,
        time_ns: int | None = None,
    ) -> State:
        """Replays the log into a detached ``State`` (the live bus is untouched): every frame
        with LSN <= ``lsn``; up to the frame that brings ``page`` to ``epoch``; every frame with
        a timestamp <= ``time`` (s) / ``time_ns`` (ns); or the whole log. At most one target.
        Raises ``ValueError``, ``TargetBeyondLogError``, ``ReplayMismatchError``, log errors."""
    def verify_consistency(self) -> None:
        """Replays the whole log and compares every page with the live one. Raises
        ``InconsistentError``."""
    def stats(self) -> Stats:
        """Counters since start, graph shape, latency percentiles (ns)."""
    def close(self) -> None:
        """Syncs the log, releases the lock, frees the pages; idempotent. Raises ``BufferError``
        while a view of a page is alive (the bus stays open)."""
    def __enter__(self) -> Bus: ...
    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool: ...

@final
class Page(Buffer):
    """A page of a live bus. Exports its bytes read-only through the buffer protocol
    (``memoryview(page)``); see the module doc for the view rule. Methods raise ``MmsbError``
    once the bus is closed. A page (or a view) keeps its bus open, with its directory lock,
    after the ``Bus`` object is gone: close the bus explicitly (or with ``with``)."""

    @property
    def id(self) -> int: ...
    @property
    def size(self) -> int:
        """Bytes, fixed at creation."""
    @property
    def epoch(self) -> int:
        """Deltas applied to the page so far."""
    @property
    def stale(self) -> bool:
        """True when a control parent changed since the page was last written."""
    @property
    def hash(self) -> int:
        """XXH3-64 of the bytes."""
    def read(self) -> bytes:
        """A copy of the bytes (``size`` of them)."""
    def view(self) -> memoryview:
        """``memoryview(self)``: zero-copy, read-only, 1-D, format ``B``."""
    def metadata(self) -> dict[str, bytes]: ...
    def set_metadata(self, key: str, value: Buffer | None) -> int:
        """Sets (or with None removes) a metadata key, logged; returns its LSN. Raises
        ``MetadataKeyTooLongError``, ``FrameTooLargeError``."""
    def write_range(self, offset: int, data: Buffer) -> int | None:
        """Writes ``data`` at ``offset`` (only differing bytes are logged), propagates and
        commits. Returns the delta's LSN, or None if nothing changed. Raises
        ``OutOfBoundsError``, ``DerivedError``, ``BufferError`` (a view of this page or of a
        page derived from it is alive), ``PoisonedError``, ``IoError``, or what a recompute
        function raised."""
    def update(self, data: Buffer) -> int | None:
        """Replaces the whole page (``len(data) == size``, else ``SizeMismatchError``). Otherwise
        as ``write_range``."""
    def __len__(self) -> int: ...

@final
class Batch:
    """Writes kept aside and applied as one commit (one propagation wave). As a context
    manager: committed when the block ends normally, discarded (nothing applied or logged) when
    it raises. Reads inside the block see the bus as before the batch."""

    def write_range(self, page: _PageLike, offset: int, data: Buffer) -> None: ...
    def update(self, page: _PageLike, data: Buffer) -> None: ...
    def commit(self) -> CommitInfo:
        """Checks every write (page exists, not derived, in bounds, no live view: else the typed
        error or ``BufferError`` and nothing is applied), then applies them as one commit."""
    def abort(self) -> None:
        """Discards the writes."""
    @property
    def result(self) -> CommitInfo | None:
        """What ``commit`` did, or None before it."""
    def __len__(self) -> int: ...
    def __enter__(self) -> Batch: ...
    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool: ...

@final
class ParentView(Buffer):
    """The exporter behind a recompute function's parent memoryviews: exports only during the
    call (``BufferError`` after it)."""

    @property
    def page(self) -> int: ...
    def __len__(self) -> int: ...

@final
class State:
    """Pages detached from any log (``replay_to``, ``replay``): immutable."""

    @property
    def last_lsn(self) -> int: ...
    @property
    def bytes(self) -> int:
        """Sum of the page sizes."""
    def page(self, id: int) -> StatePage:
        """Raises ``NoSuchPageError``."""
    def pages(self) -> list[StatePage]: ...
    def hashes(self) -> list[tuple[int, int, int]]:
        """``(id, epoch, xxh3_64)`` per page, in id order."""
    def to_dict(self) -> dict[int, builtins.bytes]: ...
    def __len__(self) -> int: ...
    def __contains__(self, id: int, /) -> bool: ...
    def __getitem__(self, id: int, /) -> StatePage:
        """Raises ``KeyError``."""

@final
class StatePage(Buffer):
    """A page of a ``State``; ``memoryview(page)`` is zero-copy and read-only."""

    @property
    def id(self) -> int: ...
    @property
    def size(self) -> int: ...
    @property
    def epoch(self) -> int: ...
    @property
    def hash(self) -> int: ...
    def read(self) -> bytes: ...
    def view(self) -> memoryview: ...
    def metadata(self) -> dict[str, bytes]: ...
    def __len__(self) -> int: ...

def log_verify(path: _StrPath, *, strict: bool = True) -> VerifyReport:
    """Checks every frame of the log at ``path`` (a directory or one segment), read-only (GIL
    released). With ``strict``, a log a reader refuses raises the reader's exception
    (``CorruptFrameError``, ``DamagedTailError``, ``BadMagicError``, ...) with ``lsn`` and
    ``report`` attributes; a torn tail is only reported. Raises ``IoError``, ``NotALogError``."""

def log_frames(
    path: _StrPath, *, start_lsn: int = 0, limit: int = 10_000, uncommitted: bool = False
) -> list[Frame]:
    """Up to ``limit`` frames with LSN >= ``start_lsn``, in LSN order (committed frames only
    unless ``uncommitted``). Raises ``CorruptFrameError``, ``DamagedTailError``,
    ``BadMagicError``, ``IoError``, ``NotALogError``, ``ValueError`` (limit 0)."""

def replay(
    path: _StrPath,
    *,
    lsn: int | None = None,
    page: _PageLike | None = None,
    epoch: int | None = None,
    time: float | None = None,
    time_ns: int | None = None,
) -> State:
    """Replays the log at ``path`` without a lock (targets as ``Bus.replay_to``)."""

class MmsbError(MemsysError):
    """Base of every exception of memsys.mmsb; raised itself for a closed bus or a call into the
    bus from a recompute function."""

class IoError(MmsbError):
    path: str
    errno: int | None
    strerror: str

class LockedError(MmsbError):
    dir: str
    waited: float

class BadMagicError(MmsbError):
    file: str
    what: str

class UnsupportedVersionError(MmsbError):
    file: str
    found: int
    supported: int

class CorruptFrameError(MmsbError):
    file: str
    offset: int
    reason: str
    lsn: int | None
    report: VerifyReport
    """Set by ``log_verify`` only."""

class DamagedTailError(MmsbError):
    file: str
    offset: int
    reason: str
    lsn: int | None
    report: VerifyReport
    """Set by ``log_verify`` only."""

class NotRegularFileError(MmsbError):
    file: str
    found: str

class NotALogError(MmsbError):
    dir: str
    reason: str

class CorruptLogIdError(MmsbError):
    file: str
    reason: str

class ForeignCheckpointError(MmsbError):
    file: str
    found: str
    expected: str

class StateUnrecoverableError(MmsbError):
    dir: str
    reason: str

class CorruptCheckpointError(MmsbError):
    file: str
    reason: str

class NoSuchPageError(MmsbError):
    page: int

class PageExistsError(MmsbError):
    page: int

class InvalidPageSizeError(MmsbError):
    size: int
    max: int

class SizeMismatchError(MmsbError):
    page: int
    expected: int
    found: int

class OutOfBoundsError(MmsbError):
    page: int
    offset: int
    end: int
    size: int

class MaskPayloadMismatchError(MmsbError):
    mask_bytes: int
    payload_bytes: int

class PageMismatchError(MmsbError):
    first: int
    second: int

class CycleError(MmsbError):
    parent: int
    child: int

class DerivedError(MmsbError):
    page: int

class InconsistentError(MmsbError):
    page: int
    live: int
    replayed: int

class DiffShapeError(MmsbError):
    page: int

class TargetBeyondLogError(MmsbError):
    target: str
    last: int

class ReplayMismatchError(MmsbError):
    lsn: int
    page: int
    reason: str

class PoisonedError(MmsbError):
    reason: str

class BatchError(MmsbError):
    reason: str

class FrameTooLargeError(MmsbError):
    bytes: int
    max: int

class MetadataKeyTooLongError(MmsbError):
    len: int
    max: int

class LogFailedError(MmsbError):
    dir: str
    cause: str

class ReadOnlyError(MmsbError):
    """A write was asked of a read-only replica."""
    dir: str

class IsReplicaError(MmsbError):
    """A replica's directory was opened as a writer; promote it first."""
    dir: str

class ReplicaFrameError(MmsbError):
    """A replicated frame was refused; nothing of its commit was logged."""
    lsn: int
    reason: str

class PrunedError(MmsbError):
    """Frames asked of a log that pruned them after a checkpoint."""
    wanted: int
    first: int
