"""memsys.datahub: zero-copy exchange between processes through shared-memory DataBlocks.

Timeouts are seconds (float); ``None`` waits without a limit. The GIL is released during
every wait, in slices of at most 200 ms between which signals are checked (Ctrl-C raises
KeyboardInterrupt whatever the timeout). A call that times out counts one timeout in the
block's metrics and reports the whole wait in ``Timeout.waited_ms``.

Slots export their memory through the buffer protocol: ``memoryview(slot)`` and
``numpy.frombuffer(slot, dtype)`` are the slot itself, not a copy. A view can never outlive
its slot: committing, aborting or releasing while a view is alive raises ``BufferError``; a
view keeps its slot object (and so the slot) alive; a slot never finished is aborted (write)
or released (read) when its last reference goes.

Every exception is a subclass of ``DataHubError`` (itself ``memsys.MemsysError``) and has
``code``: the Rust error's stable number (docs/datahub-format.md), 0 for the binding's own.
Bad arguments (an unknown policy, a negative timeout, a key that is not 32 bytes) raise
``ValueError``.
"""

from collections.abc import Iterator
from os import PathLike
from types import TracebackType
from typing import Any, Literal, Self

from typing_extensions import Buffer

import memsys

Policy = Literal["latest", "sequential", "sequential_sync"]
Checksum = Literal["none", "manual", "enforced"]

class Schema:
    """A block schema: a 32-byte hash and a version, checked at attach."""

    @staticmethod
    def from_dtype(dtype: Any, version: int = 1) -> Schema:
        """The layout schema of a numpy structured dtype: the same fingerprint as
        ``datahub::Schema::of::<T>(version)`` for the ``#[repr(C)]`` struct ``T`` with the
        same fields at the same offsets. Nested structures flatten to dotted names.

        Raises: InvalidSchema (not structured; a field that is not u8..u64, i8..i64, f32,
        f64; big-endian; misaligned or overlapping fields)."""
    @staticmethod
    def from_fields(
        fields: list[tuple[str, str, int, int]], size: int, align: int, version: int = 1
    ) -> Schema:
        """From ``(name, scalar, offset, count)`` tuples in a zone of ``size`` bytes aligned
        to ``align``. Raises: InvalidSchema."""
    @staticmethod
    def named(text: str, version: int = 1) -> Schema:
        """BLAKE2b-256 of free text (``datahub pub`` names its file stream this way)."""
    @property
    def fingerprint(self) -> str:
        """``DHS01_`` and 64 hex digits."""
    @property
    def hex(self) -> str:
        """The hash in hex, as ``datahub inspect`` prints it."""
    @property
    def version(self) -> int: ...
    @property
    def canonical(self) -> str | None:
        """The canonical layout text hashed (None for named schemas)."""

class WriteSlot(Buffer):
    """A claimed slot (``Producer.write``); exports ``size`` writable bytes.

    ``with`` commits the whole slot on a normal exit unless ``commit(n)`` ran inside, and
    aborts on an exception."""

    @property
    def seq(self) -> int:
        """Sequence number the message will have."""
    @property
    def size(self) -> int:
        """Slot size in bytes."""
    @property
    def finished(self) -> bool: ...
    @property
    def address(self) -> int:
        """The slot's address in this process. Raises SlotInUse once finished."""
    def __len__(self) -> int: ...
    def __buffer__(self, flags: int, /) -> memoryview: ...
    def commit(self, n: int | None = None) -> int:
        """Publishes the first ``n`` bytes (default: all); returns the sequence number.

        Raises: BufferError (a view is alive), PayloadTooLarge, SlotInUse (finished)."""
    def commit_with_checksum(self, n: int) -> int:
        """Manual checksums: stores the checksum of ``n`` bytes, then commits them."""
    def abort(self) -> None:
        """Gives the slot back unpublished. Raises: BufferError, SlotInUse."""
    def __enter__(self) -> Self: ...
    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool: ...

class ReadSlot(Buffer):
    """A message being read (``Consumer.read``); exports ``len(slot)`` read-only bytes.
    ``with`` releases it."""

    @property
    def seq(self) -> int: ...
    @property
    def released(self) -> bool: ...
    @property
    def address(self) -> int:
        """The message's address in this process. Raises SlotInUse once released."""
    def __len__(self) -> int: ...
    def __buffer__(self, flags: int, /) -> memoryview: ...
    def bytes(self) -> bytes:
        """A copy of the message."""
    def verify_checksum(self) -> None:
        """Raises ChecksumMismatch or ChecksumMissing (Manual checksums)."""
    def release(self) -> None:
        """Gives the slot back. Raises: BufferError (a view is alive), ValidationFailed or
        Overrun (overwritten while read), SlotInUse (released already)."""
    def __enter__(self) -> Self: ...
    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool: ...

class SlotIter(Iterator[ReadSlot]):
    """The iterator of ``Consumer.slots``."""

    def __iter__(self) -> Self: ...
    def __next__(self) -> ReadSlot: ...

class Producer:
    """Creates block ``name`` and produces into it; the block is removed when the producer is
    freed or its ``with`` block ends (unless ``unlink_on_drop=False``).

    Raises: AlreadyExists, InvalidName, InvalidConfig, NoSpace, Busy, Io, ValueError."""

    def __init__(
        self,
        name: str,
        policy: Policy = "sequential",
        slot_size: int = 4096,
        slot_count: int = 8,
        checksum: Checksum = "none",
        *,
        checksum_key: bytes | None = None,
        schema: Schema | None = None,
        flex_zone_size: int = 0,
        max_consumers: int | None = None,
        heartbeat_timeout: float = 1.0,
        unlink_on_drop: bool = True,
        take_over: bool = False,
    ) -> None: ...
    @property
    def name(self) -> str: ...
    @property
    def slot_size(self) -> int:
        """Bytes per slot."""
    @property
    def next_seq(self) -> int: ...
    @property
    def consumers(self) -> int:
        """Consumers attached now."""
    def write(self, timeout: float | None = None) -> WriteSlot:
        """Claims the next slot. Raises: Timeout (cause 'ring full' or 'readers hold the
        slot'), Closed, SlotInUse (a slot is open), BlockTruncated."""
    def send(self, data: Buffer, timeout: float | None = None) -> int:
        """Copies ``data`` into the next slot and commits it. Raises as ``write``, and
        PayloadTooLarge."""
    def wait_for_consumers(self, n: int = 1, timeout: float | None = None) -> None: ...
    def wait_drained(self, timeout: float | None = None) -> None:
        """Waits until every consumer has read every message. Raises: Timeout."""
    def close(self) -> None:
        """Ends the stream (consumers then get EndOfStream; iterators stop)."""
    def heartbeat(self) -> None: ...
    def metrics(self) -> dict[str, int]:
        """slots_written, bytes_written, slots_read, bytes_read, reader_timeouts, ... (counts,
        bytes)."""
    def info(self) -> dict[str, Any]:
        """Header and peers (``datahub inspect --json``'s block part)."""
    def register(
        self, broker: Broker, channel: str, schema_id: str = "python.bytes", timeout: float = 5.0
    ) -> dict[str, Any]:
        """Registers the block with a broker as ``channel``; heartbeated while the producer
        lives. Raises: BrokerRefused (CHANNEL_EXISTS, ...), BrokerTimeout."""
    def __enter__(self) -> Self: ...
    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        """Ends the stream and removes the block."""

class Consumer:
    """A consumer of a block; detaches when freed, on ``close()`` or after ``with``."""

    @staticmethod
    def attach(
        name: str,
        *,
        policy: Policy | None = None,
        schema: Schema | None = None,
        min_slot_size: int | None = None,
        checksum_key: bytes | None = None,
        follow_handover: bool = True,
        timeout: float | None = 0.0,
    ) -> Consumer:
        """Attaches to ``name`` (timeout > 0 or None: waits for it to appear).

        Raises: NotFound, NotReady, SchemaMismatch, ExpectationMismatch, KeyMismatch,
        TooManyConsumers, BadMagic, UnsupportedVersion, LayoutMismatch, Truncated,
        InvalidHeader, NotRegular, Timeout."""
    @staticmethod
    def attach_secure(
        socket: str | PathLike[str],
        key: bytes,
        *,
        policy: Policy | None = None,
        schema: Schema | None = None,
        min_slot_size: int | None = None,
        timeout: float | None = 0.0,
    ) -> Consumer:
        """Secure attach over an AF_UNIX socket (``datahub pub --secure-socket``); ``key`` is
        the block's 32-byte key (``read_key_file``). Raises: AttachRefused, AttachFailed,
        NotSealed, SocketDirUnsafe, KeyMismatch, Timeout, and those of ``attach``."""
    @staticmethod
    def discover(
        channel: str,
        broker: Broker,
        *,
        schema: Schema | None = None,
        policy: Policy | None = None,
        min_slot_size: int | None = None,
        timeout: float = 5.0,
    ) -> Consumer:
        """Discovers ``channel`` at the broker, attaches, registers as its consumer.

        Raises: BrokerTimeout, BrokerRefused (SCHEMA_MISMATCH, ...), BlockMismatch, and
        those of ``attach``."""
    @property
    def name(self) -> str: ...
    @property
    def position(self) -> int:
        """Sequence number of the next message this consumer reads."""
    @property
    def policy(self) -> Policy: ...
    @property
    def handovers(self) -> int: ...
    @property
    def producer_alive(self) -> bool: ...
    def read(self, timeout: float | None = None) -> ReadSlot:
        """Waits for the next message. Raises: Timeout, EndOfStream, ChecksumMismatch,
        Overrun, SlotInUse (a slot is open), BlockTruncated, Closed."""
    def try_read(self) -> ReadSlot | None:
        """The next message if there is one now."""
    def recv(self, timeout: float | None = None) -> tuple[int, bytes]:
        """Reads, copies and releases the next message: ``(seq, data)``."""
    def slots(self, timeout: float | None = None) -> SlotIter:
        """Messages until the end of the stream; each step releases the previous slot
        (BufferError if a view of it is alive). Timeout is raised, not swallowed."""
    def seek_latest(self) -> None: ...
    def seek_to(self, seq: int) -> None:
        """Raises: SeqUnavailable."""
    def heartbeat(self) -> None: ...
    def metrics(self) -> dict[str, int]: ...
    def info(self) -> dict[str, Any]: ...
    def close(self) -> None:
        """Detaches. Raises: SlotInUse while a slot is open."""
    def __enter__(self) -> Self: ...
    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool: ...

class Broker:
    """A client of ``datahub broker`` (``ipc://PATH``, or ``tcp://`` with CURVE key files)."""

    def __init__(
        self,
        endpoint: str | None = None,
        role: str = "python",
        *,
        key: str | PathLike[str] | None = None,
        server_key: str | PathLike[str] | None = None,
    ) -> None: ...
    @property
    def endpoint(self) -> str: ...
    def channels(self, timeout: float = 5.0) -> list[dict[str, Any]]: ...
    def metrics(self, timeout: float = 5.0) -> dict[str, Any]: ...
    def deregister(self, channel: str, timeout: float = 5.0) -> None: ...

class Admin:
    """Diagnosis and recovery of block ``name`` (``datahub diagnose``/``recover``)."""

    def __init__(self, name: str) -> None: ...
    def info(self) -> dict[str, Any]: ...
    def metrics(self) -> dict[str, int]: ...
    def diagnose(self) -> dict[str, Any]:
        """``{"info", "slots": [...], "problems": [str]}`` (read only)."""
    def validate(self, repair: bool = False) -> dict[str, Any]:
        """``{"ok": bool, "problems": [str], "repairs": [action]}``."""
    def recover(self, dry_run: bool = True) -> list[dict[str, Any]]:
        """Every safe recovery action (``{"action": ..., ...}``); dry_run only lists them."""
    def check_intact(self) -> None:
        """Raises BlockTruncated."""
    def remove(self) -> None: ...

def list_blocks() -> list[str]:
    """Names of the blocks in /dev/shm (or $DATAHUB_SHM_DIR)."""

def remove_block(name: str) -> None: ...
def read_key_file(path: str | PathLike[str]) -> bytes:
    """A 32-byte key from 64 hex characters or 32 raw bytes (O_NOFOLLOW, mode 0600)."""

class DataHubError(memsys.MemsysError):
    code: int

class Io(DataHubError): ...
class InvalidName(DataHubError): ...
class NotFound(DataHubError): ...
class NotReady(DataHubError): ...
class NotRegular(DataHubError): ...
class NoSpace(DataHubError): ...
class Busy(DataHubError): ...
class BlockTruncated(DataHubError): ...
class InvalidSlotState(DataHubError): ...
class InvalidSlotIndex(DataHubError): ...
class InvalidSuccessor(DataHubError): ...
class HandedOver(DataHubError): ...
class AlreadyExists(DataHubError): ...
class BadMagic(DataHubError): ...
class UnsupportedVersion(DataHubError): ...
class LayoutMismatch(DataHubError): ...
class Truncated(DataHubError): ...
class InvalidHeader(DataHubError): ...
class InvalidConfig(DataHubError): ...
class SchemaMismatch(DataHubError):
    expected: str
    found: str
    expected_version: int
    found_version: int

class ExpectationMismatch(DataHubError): ...
class KeyMismatch(DataHubError): ...
class Timeout(DataHubError):
    op: str
    cause: str
    waited_ms: int

class ChecksumMismatch(DataHubError):
    slot: int
    seq: int

class ChecksumMissing(DataHubError): ...
class TooManyConsumers(DataHubError): ...
class PayloadTooLarge(DataHubError):
    len: int
    slot_size: int

class ValidationFailed(DataHubError): ...
class Overrun(DataHubError): ...
class Discarded(DataHubError): ...
class SeqUnavailable(DataHubError): ...
class EndOfStream(DataHubError): ...
class Closed(DataHubError): ...
class OwnerAlive(DataHubError): ...
class ProducerAlive(DataHubError): ...
class WouldDeadlock(DataHubError): ...
class OutOfRange(DataHubError): ...
class HugePagesUnavailable(DataHubError): ...
class SocketDirUnsafe(DataHubError): ...
class AttachRefused(DataHubError): ...
class NotSealed(DataHubError): ...
class AttachFailed(DataHubError): ...
class SlotInUse(DataHubError): ...
class InvalidSchema(DataHubError):
    reason: str

class BrokerError(DataHubError): ...
class BrokerTimeout(BrokerError): ...
class BrokerRefused(BrokerError):
    error_code: str
    message: str

class BrokerEndpoint(BrokerError): ...
class BrokerBadReply(BrokerError): ...
class BrokerInvalidArgument(BrokerError): ...
class BlockMismatch(BrokerError): ...
class BrokerClosed(BrokerError): ...
class KeyFileError(BrokerError): ...
class AuthRefused(BrokerError): ...
class BrokerTransport(BrokerError): ...
