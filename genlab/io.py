"""Reading files without running code from them: checkpoints through `torch.load(weights_only=True)` (also the
models' own `load_from_checkpoint`, via `WeightsOnlyCheckpoint`), dataset pickles through an allow-list unpickler;
writing checkpoints atomically, and clearing the temporary files a killed writer left.

A pickle can name any importable callable and have it called on load (`__reduce__`), so an untrusted file could run
arbitrary code. The loaders refuse such files with an `UnsafeFileError` before anything in them is called.
"""

import io
import os
import pickle
import re
import tempfile
import time
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.utilities.cloud_io import get_filesystem
from lightning.pytorch.plugins.io import TorchCheckpointIO
from fsspec.implementations.local import LocalFileSystem

from .errors import GenlabError


class UnsafeFileError(GenlabError):
    """The file needs code execution to load (a pickled object that is not plain data): refused."""


class CorruptFileError(GenlabError):
    """The file is truncated or is not the format it should be."""


def load_checkpoint(path: str | Path, map_location: Any = "cpu") -> dict:
    """A Lightning/torch checkpoint as a dict, loaded with weights_only=True (tensors and plain containers only)."""
    path = Path(path)
    if not path.is_file():
        raise GenlabError(f"checkpoint {path} does not exist (or is not a file)")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True,
                                mmap=zipfile.is_zipfile(path))  # mmap: cheap for a quick look at hparams
    except pickle.UnpicklingError as error:  # torch's weights-only unpickler met a global it does not allow
        if "Unsupported global" not in str(error):  # random bytes or a truncated legacy file: nothing to run
            raise CorruptFileError(f"{path} is not a readable checkpoint (truncated or corrupt?): "
                                   f"{_weights_unpickler_reason(error)}") from error
        raise UnsafeFileError(
            f"refused to load {path}: it is not plain weights (loading it would run code: "
            f"{_weights_unpickler_reason(error)}); genlab loads checkpoints with weights_only=True, so use a "
            f"checkpoint written by genlab/Lightning, or re-save a trusted one as a state dict") from error
    except (RuntimeError, EOFError, OSError, ValueError) as error:
        raise CorruptFileError(f"{path} is not a readable checkpoint (truncated or corrupt?): {_first_line(error)}") \
            from error
    if not isinstance(checkpoint, dict):
        raise CorruptFileError(f"{path} is not a Lightning checkpoint: it holds a {type(checkpoint).__name__}, "
                               f"not a dict with 'state_dict'")
    if "state_dict" not in checkpoint:
        raise CorruptFileError(f"{path} is not a Lightning checkpoint: it has no 'state_dict' (keys: "
                               f"{', '.join(map(str, list(checkpoint)[:8]))}); pass a checkpoint written by genlab fit")
    return checkpoint


def _weights_unpickler_reason(error: BaseException) -> str:
    """The unpickler's own reason (e.g. 'Unsupported operand 221') from torch's long weights-only message."""
    reason = re.search(r"Unsupported (global|operand)[^\n]*?(?=\. |\n|$)", str(error))
    return reason.group(0) if reason else _first_line(error)


def _first_line(error: BaseException) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


class WeightsOnlyCheckpoint:
    """Mixin for LightningModules: `load_from_checkpoint` always loads weights-only, whatever torch's default.

    Lightning passes `weights_only=None` to `torch.load` by default, which `TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1` turns
    into a full unpickle that runs whatever code the file names; an explicit `weights_only=True` is never overridden.
    List it before LightningModule: `class Model(WeightsOnlyCheckpoint, LightningModule)`.
    """

    @classmethod
    def load_from_checkpoint(cls, checkpoint_path: Any, map_location: Any = None, hparams_file: Any = None,
                             strict: bool | None = None, weights_only: bool | None = True, **kwargs: Any) -> Any:
        if weights_only is False:
            raise ValueError(f"{cls.__name__}.load_from_checkpoint loads weights only (weights_only=True); "
                             f"weights_only=False is refused, as it would run code stored in the file")
        try:
            return super().load_from_checkpoint(checkpoint_path, map_location=map_location,  # type: ignore[misc]
                                                hparams_file=hparams_file, strict=strict, weights_only=True, **kwargs)
        except pickle.UnpicklingError as error:
            raise UnsafeFileError(
                f"refused to load {checkpoint_path}: it is not plain weights (loading it would run code: "
                f"{_first_line(error)})") from error


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickles plain data and numpy arrays only; any other global (a function or class to call) is refused."""

    ALLOWED = frozenset({
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
        ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
    })

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed")
        return super().find_class(module, name)


def load_pickle(path: str | Path, encoding: str = "latin1") -> Any:
    """A pickle of plain data / numpy arrays (e.g. CIFAR's batches, written by Python 2, hence latin1)."""
    path = Path(path)
    data = path.read_bytes()
    try:
        return RestrictedUnpickler(io.BytesIO(data), encoding=encoding).load()
    except pickle.UnpicklingError as error:
        if "is not allowed" in str(error):
            raise UnsafeFileError(f"refused to load {path}: it is not plain data ({error}; loading it would run "
                                  f"code)") from error
        raise CorruptFileError(f"{path} is truncated or corrupt: {_first_line(error)}") from error
    except (EOFError, ValueError, TypeError, IndexError, KeyError, AttributeError, MemoryError) as error:
        raise CorruptFileError(f"{path} is truncated or corrupt: {_first_line(error)}") from error


TEMP_SUFFIX = ".tmp"


def _temp_file(path: Path) -> tuple[int, str]:
    """An open temporary file beside `path`: hidden (no *.ckpt / *.png glob finds it) and named by its writer's pid,
    so a later run can tell a dead writer's leftovers (`remove_stale_temp_files`)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=TEMP_SUFFIX, dir=path.parent)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; the file gets the usual permissions
    return fd, tmp


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path beside `path` to write to; renamed over `path` when the block succeeds, removed otherwise,
    so a kill at any moment leaves the old file or the complete new one, never a truncated one."""
    path = Path(path)
    fd, tmp = _temp_file(path)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except OSError as error:
        Path(tmp).unlink(missing_ok=True)
        if error.filename is None:  # write(2) failing (a full disk) names no file: name the one being written
            raise OSError(error.errno, error.strerror, str(path)) from error
        raise
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes a checkpoint to a temporary file in the same folder, fsyncs it, then renames it over the target.

    A kill at any moment leaves either the old complete file or the new complete one, never a truncated
    `last.ckpt`. (Lightning's own save goes through a temporary file in the system temp folder and `shutil.move`,
    which is a non-atomic copy when that folder is on another filesystem, and does not fsync.) Remote paths fall
    back to Lightning's writer.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any = None) -> None:
        if storage_options is not None or not isinstance(get_filesystem(path), LocalFileSystem):
            return super().save_checkpoint(checkpoint, path, storage_options)
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp, open(tmp, "wb") as file:
            torch.save(checkpoint, file)
            file.flush()
            os.fsync(file.fileno())
        try:  # make the rename itself durable
            dir_fd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except OSError:
            pass


def remove_stale_temp_files(folder: str | Path, name: str = "*", max_age: float = 600.0) -> list[Path]:
    """Delete the temporary files `AtomicCheckpointIO` left in `folder` (while writing `name`, by default any file)
    when it was killed (kill -9, out of memory): those whose writer process is gone, and any not written to for
    `max_age` seconds (a writer on another machine). Returns the paths removed."""
    removed, now = [], time.time()
    for tmp in Path(folder).glob(f".{name}.*{TEMP_SUFFIX}"):
        pid = tmp.name.removesuffix(TEMP_SUFFIX).rsplit(".", 2)[1]  # .<name>.<pid>.<random>.tmp
        try:
            stale = not (pid.isdigit() and _alive(int(pid))) or now - tmp.stat().st_mtime > max_age
            if stale:
                tmp.unlink()
                removed.append(tmp)
        except FileNotFoundError:  # its writer finished (or another run cleared it) meanwhile
            continue
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True
