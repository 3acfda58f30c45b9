"""What goes wrong with a dataset's files: missing (`DatasetNotFoundError`) or there but unreadable
(`DatasetCorruptError`), each with a message that says where we looked and how to fix it."""

import pickle
import struct
import zlib
from collections.abc import Sequence
from pathlib import Path


class DatasetNotFoundError(FileNotFoundError):
    """A dataset's files are missing (or fail their checks); the message says where we looked and how to fix it."""

    def __init__(self, dataset: str, folder: Path, expected: Sequence[str], detail: str = "") -> None:
        self.dataset, self.folder, self.expected, self.detail = dataset, Path(folder), list(expected), detail
        super().__init__(
            f"{dataset}: dataset not found in {folder}" + (f" ({detail})" if detail else "") + ".\n"
            f"  Expected there: {', '.join(expected)}.\n"
            f"  Fix: put those files in that folder, point GENLAB_DATA (or --data.root) at the folder that holds "
            f"them, or run once with --data.download true on a machine with internet access."
        )

    def __reduce__(self) -> tuple:  # rebuilt from its own arguments, so it survives pickling (e.g. across processes)
        return type(self), (self.dataset, self.folder, self.expected, self.detail)


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
