"""User-facing errors of the `genlab` command: one readable line each, saying what was wrong and what is allowed.

From the shell, `genlab` prints `genlab: error: <line>` and exits with status 2 (bad arguments) or 1; from Python,
`genlab.cli.main([...])` raises the `GenlabError` instead, so callers and tests can catch it.
"""

import errno
import traceback
from collections.abc import Sequence
from pathlib import Path

from lightning.fabric.utilities.exceptions import MisconfigurationException

PACKAGE_DIR = Path(__file__).resolve().parent


class GenlabError(ValueError):
    """A mistake in what the user asked for (or in their files), with a message that says how to fix it."""

    exit_code = 1


class UsageError(GenlabError):
    """The command line or config file does not parse or names something that does not exist."""

    exit_code = 2


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


def raised_by_genlab(error: BaseException) -> bool:
    """True when the innermost frame of `error` (or of the error it wraps) is genlab's own code: a deliberate,
    explained `raise`, as opposed to a bug deep in a library."""
    while error.__cause__ is not None:
        error = error.__cause__
    frames = traceback.extract_tb(error.__traceback__)
    return bool(frames) and Path(frames[-1].filename).resolve().is_relative_to(PACKAGE_DIR)


def innermost_message(error: BaseException) -> str:
    """The message of the deepest error in the chain (jsonargparse wraps ours in its own reports)."""
    while error.__cause__ is not None or (error.__context__ is not None and not error.__suppress_context__):
        error = error.__cause__ or error.__context__
    return " ".join(str(error).split()) or type(error).__name__


def is_config_error(error: BaseException) -> bool:
    """Errors from building the model/data/trainer that a user caused: our own checks, jsonargparse, Lightning's."""
    while error.__cause__ is not None:
        error = error.__cause__
    return (raised_by_genlab(error) or isinstance(error, MisconfigurationException)
            or type(error).__module__.startswith("jsonargparse"))


WRITE_ERRORS = {errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOTDIR, errno.EEXIST, errno.EISDIR,
                errno.EDQUOT}


def write_error(error: BaseException | None) -> OSError | None:
    """The OSError of a failed write (full disk, read-only folder, a file where a folder should be) in the chain."""
    while error is not None:
        if isinstance(error, OSError) and error.errno in WRITE_ERRORS:
            return error
        error = error.__cause__ or error.__context__
    return None


def user_error(error: BaseException) -> tuple[str, int] | None:
    """(message, exit status) for an error the user can fix from its message alone; None for anything else."""
    if isinstance(error, GenlabError):
        return str(error), error.exit_code
    if (failed := write_error(error)) is not None:
        name = errno.errorcode.get(failed.errno, str(failed.errno))
        return (f"cannot write {failed.filename or 'a file'}: {failed.strerror} ({name}); free some space, make the "
                f"folder writable, or choose another --trainer.default_root_dir"), 1
    if isinstance(error, DatasetNotFoundError) or (
            isinstance(error, ValueError) and raised_by_genlab(error)):
        return str(error), 1
    return None
