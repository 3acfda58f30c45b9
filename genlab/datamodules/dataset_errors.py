"""What goes wrong with a dataset's files: missing (`DatasetNotFoundError`, defined in `genlab.errors`) or there but
unreadable (`DatasetCorruptError`), each with a message that says where we looked and how to fix it."""

import pickle
import struct
import zlib
from pathlib import Path

from ..errors import DatasetNotFoundError


class DatasetCorruptError(DatasetNotFoundError):
    """A dataset file is there but cannot be read (truncated download, bad .mat, corrupt pickle): re-fetch it."""

    def __init__(self, dataset: str, path: Path, detail: str = "") -> None:
        self.dataset, self.path, self.detail = dataset, Path(path), detail
        self.folder, self.expected = self.path.parent, [self.path.name]
        FileNotFoundError.__init__(
            self, f"{dataset}: {path} is truncated or corrupt" + (f" ({detail})" if detail else "") + ".\n"
            f"  Fix: delete it and fetch it again (--data.download true on a machine with internet access), or copy "
            f"a complete copy into {self.folder}.")

    def __reduce__(self) -> tuple:
        return type(self), (self.dataset, self.path, self.detail)


# What reading a cut or damaged file raises (gzip, zlib, pickle, scipy's .mat reader, our idx parser).
READ_ERRORS = (EOFError, zlib.error, pickle.UnpicklingError, struct.error, OSError, ValueError, TypeError, KeyError,
               IndexError)
