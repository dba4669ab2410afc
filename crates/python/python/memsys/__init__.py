"""memsys: DataHub, MMSB and tslab snapshots from Python.

Submodules:

- ``memsys.datahub``: zero-copy exchange between processes through shared-memory DataBlocks.
- ``memsys.mmsb``: a versioned page store changed only by deltas, with a write-ahead log.
- ``memsys.tslab``: temporal-slab stats snapshots.

Every exception raised is a subclass of :class:`MemsysError`.
"""

import sys as _sys

from . import _native
from ._native import MemsysError, __version__

datahub = _native.datahub
mmsb = _native.mmsb
tslab = _native.tslab

# The submodules live inside the extension module; registering them makes
# ``import memsys.datahub`` and ``from memsys.datahub import Producer`` work.
for _name in ("datahub", "mmsb", "tslab"):
    _sys.modules[f"{__name__}.{_name}"] = getattr(_native, _name)
del _name

__all__ = ["MemsysError", "__version__", "datahub", "mmsb", "tslab"]
