"""temporal-slab stats snapshots (schema version 1, ``schemas/stats_v1.schema.json``).

``Snapshot.load(path_or_url)`` reads one snapshot from a file or a live endpoint (``tslab demo
--listen``, ``tslab serve``, a service using ``tslab::endpoint``) through the reader the ``tslab``
CLI uses: a final symbolic link is refused (``O_NOFOLLOW``), anything but a regular file is
refused without blocking, at most ``Snapshot.MAX_INPUT_BYTES`` are read, and a URL fetch is
bounded by ``Snapshot.HTTP_TIMEOUT`` seconds. Rankings, the summary and the diff are ``tslab
top/stats/diff``'s own code.

Every error is a subclass of :class:`TslabError` (itself a :class:`memsys.MemsysError`), one
class per variant of the Rust ``tslab::Error``, with the variant's fields as attributes; the
message is one line.
"""

from __future__ import annotations

import os
from typing import Any, ClassVar, Literal

from . import MemsysError

EpochMetric = Literal["rss_bytes", "rss", "age_sec", "refcount", "reclaimable_bytes"]
ClassMetric = Literal[
    "slow_path_hits",
    "new_slab_count",
    "madvise_bytes",
    "net_slabs",
    "lock_contended",
    "bitmap_alloc_cas_retries",
]

class TslabError(MemsysError):
    """Base of every memsys.tslab exception."""

    origin: str | None
    """The path or URL the document came from; None when the error has none."""

class IoError(TslabError):
    """A file could not be opened or read, or is not UTF-8 (Rust ``Error::Io``)."""

    origin: str
    path: str
    errno: int | None
    """The OS error number (``errno.ENOENT``, ...); None for a non-OS error (not UTF-8)."""
    strerror: str

class TooLargeError(TslabError):
    """The input is larger than ``Snapshot.MAX_INPUT_BYTES`` (Rust ``Error::TooLarge``)."""

    origin: str
    limit: int
    """The bound, bytes."""

class NotRegularFileError(TslabError):
    """The path is a symbolic link (never followed), a directory, a FIFO, a device or a socket
    (Rust ``Error::NotRegularFile``)."""

    origin: str
    path: str
    kind: str
    """"directory", "fifo", "character device", "symbolic link, not followed", ..."""

class JsonError(TslabError):
    """Not valid JSON, or a field of the wrong type (Rust ``Error::Json``)."""

    origin: str
    line: int
    """1-based line of the error (0 when unknown)."""
    column: int
    """1-based column of the error."""
    category: Literal["syntax", "data", "eof", "io"]
    """"eof" for a truncated document, "data" for a field of the wrong type or value."""

class MissingSchemaVersionError(TslabError):
    """The document has no ``schema_version`` (Rust ``Error::MissingSchemaVersion``)."""

    origin: str
    field: Literal["schema_version"]

class UnknownSchemaVersionError(TslabError):
    """The document's ``schema_version`` is not 1 (Rust ``Error::UnknownSchemaVersion``)."""

    origin: str
    field: Literal["schema_version"]
    found: str
    """The value found, as JSON text (``"2"``, ``'"1"'``)."""

class SchemaError(TslabError):
    """The document breaks ``schemas/stats_v1.schema.json`` (Rust ``Error::Schema``; only
    with ``validate=True``)."""

    origin: str
    instance_path: str
    """JSON pointer of the failing value ("" for the root), e.g. "/page_size"."""
    field: str
    """Same as ``instance_path``."""
    message: str

class HttpError(TslabError):
    """A URL could not be fetched: connection refused, timeout (``Snapshot.HTTP_TIMEOUT``), a
    status other than 200 (Rust ``Error::Http``)."""

    origin: str
    url: str
    message: str

class CorpusError(TslabError):
    """A demo corpus is empty or malformed (Rust ``Error::Corpus``). Not raised by this
    module's API (it runs no demo); there for the one-to-one mapping."""

    message: str

class RequestError(TslabError):
    """A demo request failed (Rust ``Error::Request``). Not raised by this module's API."""

    message: str

class UsageError(TslabError):
    """An invalid argument (Rust ``Error::Usage``): an unknown metric name, an ``https://``
    URL, ``"-"`` as a source, a negative or non-finite threshold."""

    message: str

class AllocError(TslabError):
    """The allocator refused something (Rust ``Error::Alloc``). Not raised by this module's
    API."""

    message: str

class Snapshot:
    """One temporal-slab stats snapshot (schema version 1), read-only.

    The scalar fields of the schema are properties (int); ``label_registry`` is a dict;
    ``classes()`` and ``epochs()`` are lists of dicts; ``to_dict()`` is the whole document.
    Equal (``==``) when the contents are, whatever the origin.
    """

    SCHEMA_VERSION: ClassVar[int]
    """The schema version read and written: 1."""
    MAX_INPUT_BYTES: ClassVar[int]
    """Largest document read from a file, a URL or given to ``from_json``, bytes (64 MiB)."""
    HTTP_TIMEOUT: ClassVar[float]
    """Longest a URL fetch may take, connect to last byte, seconds (5.0)."""
    EPOCH_METRICS: ClassVar[tuple[str, ...]]
    """What ``top_epochs(by=...)`` ranks by: rss_bytes, age_sec, refcount, reclaimable_bytes."""
    CLASS_METRICS: ClassVar[tuple[str, ...]]
    """What ``top_classes(by=...)`` ranks by: slow_path_hits, new_slab_count, madvise_bytes,
    net_slabs, lock_contended, bitmap_alloc_cas_retries."""

    @staticmethod
    def load(source: str | os.PathLike[str], *, validate: bool = False) -> Snapshot:
        """Reads one snapshot from a file path or a live endpoint's URL.

        A str starting with ``http://`` is a URL: ``http://host:port`` fetches
        ``/stats.json``, ``http://host:port/path`` that path. Anything else (and any
        ``os.PathLike``) is a file path. ``"-"`` and ``https://`` are refused (UsageError).
        With ``validate``, the document is checked against the JSON Schema first. The GIL is
        released while reading.

        Raises:
            NotRegularFileError: a symbolic link, directory, FIFO, device or socket.
            IoError: the file cannot be opened or read, or is not UTF-8.
            TooLargeError: more than ``Snapshot.MAX_INPUT_BYTES``.
            HttpError: the URL cannot be fetched within ``Snapshot.HTTP_TIMEOUT``, or answers
                other than 200.
            JsonError, MissingSchemaVersionError, UnknownSchemaVersionError: not a v1 snapshot.
            SchemaError: with ``validate``, a schema violation.
            UsageError: ``"-"`` or an ``https://`` URL.
            TypeError: ``source`` is neither str nor os.PathLike.
        """

    @staticmethod
    def from_json(
        text: str | bytes, origin: str = "<string>", *, validate: bool = False
    ) -> Snapshot:
        """Parses a stats JSON document (bytes must be UTF-8); ``origin`` names it in errors.

        Raises:
            TooLargeError, IoError (bytes not UTF-8), JsonError, MissingSchemaVersionError,
            UnknownSchemaVersionError, SchemaError (with ``validate``).
        """

    @property
    def origin(self) -> str:
        """Where the snapshot came from: the path or URL (``.../stats.json``) given to
        ``load``, or ``from_json``'s ``origin``."""
    @property
    def schema_version(self) -> int:
        """Schema version of the document: always 1 (other versions are refused with `UnknownSchemaVersionError`)."""
    @property
    def timestamp_ns(self) -> int:
        """Wall-clock time of the snapshot, nanoseconds since the Unix epoch."""
    @property
    def pid(self) -> int:
        """Process id of the allocator's process."""
    @property
    def page_size(self) -> int:
        """Slab (page) size in bytes."""
    @property
    def epoch_count(self) -> int:
        """Epoch ring size."""
    @property
    def current_epoch(self) -> int:
        """Ring index of the current epoch."""
    @property
    def current_era(self) -> int:
        """Era of the current epoch."""
    @property
    def rss_bytes(self) -> int:
        """Process RSS, bytes (0 when it could not be read)."""
    @property
    def slabs_carved(self) -> int:
        """Slabs carved from the reservation so far."""
    @property
    def reserved_bytes(self) -> int:
        """Address space reserved, bytes."""
    @property
    def total_allocs(self) -> int:
        """Objects allocated, all classes."""
    @property
    def total_frees(self) -> int:
        """Objects freed, all classes."""
    @property
    def total_slow_path_hits(self) -> int:
        """Slow-path allocations, all classes."""
    @property
    def total_new_slabs(self) -> int:
        """Slabs carved fresh, all classes."""
    @property
    def total_madvise_calls(self) -> int:
        """`madvise` calls, all classes."""
    @property
    def total_madvise_bytes(self) -> int:
        """Bytes given back with `madvise`, all classes."""
    @property
    def total_madvise_failures(self) -> int:
        """Failed `madvise` calls, all classes."""
    @property
    def epoch_close_calls(self) -> int:
        """`epoch_close` calls."""
    @property
    def epoch_close_scanned_slabs(self) -> int:
        """Slabs examined by `epoch_close`."""
    @property
    def epoch_close_recycled_slabs(self) -> int:
        """Slabs recycled by `epoch_close`."""
    @property
    def epoch_close_total_ns(self) -> int:
        """Time spent in `epoch_close`, nanoseconds."""
    @property
    def epoch_advances(self) -> int:
        """Epochs opened by `epoch_advance`."""
    @property
    def epoch_advance_refused(self) -> int:
        """`epoch_advance` calls refused because every other ring slot held an epoch that had not drained (`EpochRingFull`); 0 in snapshots written before the field existed."""
    @property
    def epoch_closed_errors(self) -> int:
        """Allocations refused because their epoch was CLOSING."""
    @property
    def stale_epoch_errors(self) -> int:
        """Operations refused because their epoch id was stale."""
    @property
    def handle_errors(self) -> int:
        """Frees and lookups refused because of a bad handle."""
    @property
    def pointer_errors(self) -> int:
        """`free_ptr` calls refused."""
    @property
    def system_fallback_allocs(self) -> int:
        """Requests sent to the system allocator (too large or over-aligned)."""
    @property
    def system_fallback_bytes(self) -> int:
        """Bytes of those requests."""

    @property
    def label_registry(self) -> dict[str, Any]:
        """``{"count": int, "max_labels": int, "labels": list[str]}``; label id ``i + 1`` is
        ``labels[i]``, id 0 means unlabeled."""

    @property
    def has_epochs(self) -> bool:
        """Whether the document has an ``epochs`` array (older than Phase 2.3: none)."""

    def classes(self) -> list[dict[str, Any]]:
        """One dict per size class (the schema's ``classes[]``), in document order: counters
        and gauges (int; ``object_size`` bytes, ``madvise_bytes`` bytes), the derived
        ``slow_path_rate``, ``cas_retries_per_alloc``, ``lock_contention_rate`` (float,
        fractions) and ``net_slabs`` (int), and ``by_label`` when the allocator had it."""

    def epochs(self) -> list[dict[str, Any]]:
        """One dict per opened ring slot (the schema's ``epochs[]``), in document order:
        ``epoch_id``, ``epoch_era``, ``state`` ("ACTIVE" or "CLOSING"), ``age_sec`` (whole
        seconds), ``refcount``, ``label``, slab counts, ``estimated_rss_bytes``,
        ``rss_before_close``/``rss_after_close`` (bytes), ``live_objects``, ``slow_path_hits``,
        ``new_slabs``, ``recycled_slabs``. ``[]`` when ``has_epochs`` is False."""

    def to_dict(self) -> dict[str, Any]:
        """The whole snapshot as plain Python data (``json.loads(self.to_json())``): fields
        the document left out have their defaults (0); derived class rates are recomputed."""

    def to_json(self) -> str:
        """The snapshot as pretty-printed schema-v1 JSON (as ``/stats.json`` serves it)."""

    def summary(self) -> dict[str, Any]:
        """The ``tslab stats`` summary: ``rss_bytes``, ``estimated_slab_rss_bytes`` (bytes),
        slab totals, slow-path, madvise and contention totals and rates, epoch counts by state,
        ``top_epochs_by_rss`` (3 epoch dicts)."""

    def top_epochs(
        self,
        by: EpochMetric = "rss_bytes",
        n: int = 10,
        *,
        ascending: bool = False,
        before: Snapshot | None = None,
    ) -> list[dict[str, Any]]:
        """The ``n`` epochs ranked by ``by``, largest first (smallest with ``ascending``), ties
        by ``epoch_id``: ``tslab top --epochs``. ``rss_bytes`` is ``estimated_rss_bytes``,
        ``reclaimable_bytes`` is ``total_reclaimable_slabs * page_size``.

        Each row is the epoch's dict plus ``value`` (float): the figure ranked by, or with
        ``before`` (an older snapshot of the same allocator) its change per second, matching
        epochs by ``epoch_id`` and ``epoch_era``. ``[]`` without epoch data.

        Raises:
            UsageError: ``by`` is not one of ``Snapshot.EPOCH_METRICS`` (or "rss").
        """

    def top_classes(
        self,
        by: ClassMetric = "slow_path_hits",
        n: int = 10,
        *,
        ascending: bool = False,
        before: Snapshot | None = None,
    ) -> list[dict[str, Any]]:
        """The ``n`` size classes ranked by ``by``, largest first, ties by ``class``: ``tslab
        top --classes``. Each row is the class's dict plus ``value`` (float; per second with
        ``before``).

        Raises:
            UsageError: ``by`` is not one of ``Snapshot.CLASS_METRICS``.
        """

    def diff(self, other: Snapshot, threshold_pct: float = 10.0) -> dict[str, Any]:
        """Compares this (older) snapshot with ``other`` (newer): ``tslab diff self other``.

        Returns ``{"threshold_pct": float, "regressed": bool, "rows": [{"metric": str,
        "before": float, "after": float, "change_pct": float | None, "regression": bool}]}``
        over slow_path_rate, madvise_failures, rss_bytes and lock_contention_rate (higher is
        worse for each; ``change_pct`` is None when ``before`` is 0 and ``after`` is not).

        Raises:
            UsageError: ``threshold_pct`` is negative, NaN or infinite.
        """

    def __eq__(self, other: object) -> bool: ...
    def __repr__(self) -> str: ...
