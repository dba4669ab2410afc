from . import datahub as datahub, mmsb as mmsb, tslab as tslab

__version__: str

class MemsysError(Exception):
    """Base of every exception memsys raises."""
