"""Decode once: image files decoded in parallel into one memory-mapped uint8 `.npy` (N, C, H, W), reused by later runs.

The cache is named by two hashes: of the decode settings, and of the file list with each file's size and mtime. A run
whose files and settings are unchanged opens the existing file at once; a changed, added or removed file gives a new
name, so that file is rebuilt (and the stale one of the same settings deleted). Rows of files that could not be read
stay zero and are listed in the sidecar `.json`, which is written last: a cache without it is incomplete.

Opened with `mmap_mode="c"`, the array is a private, writable mapping of the file: `torch.from_numpy` wraps it
without a copy, a gather by index reads only the rows it touches, and the pages are the kernel's page cache,
shared by every process (DDP ranks) that maps the same file.
"""

import hashlib
import json
import os
import socket
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from lightning.pytorch.utilities import rank_zero_warn
from tqdm import tqdm

from ..errors import GenlabError
from .dataset_errors import READ_ERRORS

FORMAT_VERSION = 1  # bump when the decoding itself changes, so old caches are not reused
SHOWN_BAD_FILES = 3  # how many unreadable files a warning names
CHUNK = 64  # files per task: enough to amortise scheduling, small enough for a smooth progress bar

# What decoding a truncated, empty or non-image file raises (PIL: OSError incl. UnidentifiedImageError, SyntaxError,
# and its format plugins' parsing errors). TypeError is left out: it means a bug in the decoder, not a bad file.
DECODE_ERRORS = (*(e for e in READ_ERRORS if e is not TypeError), SyntaxError, Image.DecompressionBombError)
Decode = Callable[[Path], np.ndarray]  # one file -> uint8 array of the cache's item shape; raises when unreadable


@dataclass
class DecodedImages:
    """A decoded cache: `images` (N, C, H, W) uint8 memmap in file order, `bad` {row: reason} of unreadable files,
    `path` of the .npy, and whether this call `built` it (False: reused)."""

    images: np.ndarray
    bad: dict[int, str]
    path: Path
    built: bool


def default_cache_dir(root: Path) -> Path:
    """`root/.genlab_cache` (skipped when scanning for images) when `root` is writable, else a per-root folder under
    $XDG_CACHE_HOME (default ~/.cache)/genlab, so read-only data still gets a cache."""
    if os.access(root, os.W_OK):
        return root / ".genlab_cache"
    tag = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:12]
    return Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache").expanduser() / "genlab" / f"{root.name}-{tag}"


def digest(text: str, size: int) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:size]


def cache_name(root: Path, files: Sequence[str], settings: dict) -> tuple[str, str]:
    """(settings key, full name): the settings hash, then a hash of every file's relative name, size and mtime."""
    settings_key = digest(json.dumps({"version": FORMAT_VERSION, **settings}, sort_keys=True), 12)
    lines = []
    for name in files:
        stat = (root / name).stat()
        lines.append(f"{name}\t{stat.st_size}\t{stat.st_mtime_ns}")
    return settings_key, f"{settings_key}-{digest(chr(10).join(lines), 16)}"


def open_cache(path: Path, count: int, item_shape: tuple[int, ...]) -> DecodedImages | None:
    """The cache at `path` if it is complete and of the expected shape, else None."""
    meta_path = path.with_suffix(".json")
    if not (path.is_file() and meta_path.is_file()):
        return None
    try:
        meta = json.loads(meta_path.read_text())
        images = np.load(path, mmap_mode="c")
    except (OSError, ValueError):
        return None
    if images.dtype != np.uint8 or images.shape != (count, *item_shape) or meta.get("count") != count:
        return None
    return DecodedImages(images, {int(row): reason for row, reason in meta["bad"].items()}, path, built=False)


def decoded_images(root: Path, files: Sequence[str], decode: Decode, item_shape: tuple[int, ...], settings: dict,
                   cache_dir: Path, workers: int | None = None, stop_on_bad: bool = False, bad_file_hint: str = "",
                   desc: str = "decoding images") -> DecodedImages:
    """The cache of `files` (relative to `root`) decoded by `decode` into `item_shape`, built if needed.

    Decoding runs in `workers` threads (None: one per core; PIL releases the GIL while it decodes and resizes), each
    writing its rows straight into the memmap, so no pixels cross a pipe and host memory stays flat. With
    `stop_on_bad`, the first unreadable file stops the build (nothing is written) and raises a GenlabError naming it
    and `bad_file_hint` (what the user can do about it).
    """
    settings_key, name = cache_name(root, files, settings)
    path = cache_dir / f"{name}.npy"
    cached = open_cache(path, len(files), item_shape)
    if cached is not None:
        return cached
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise GenlabError(f"cannot create the image cache folder {cache_dir} ({error.strerror}); pass "
                          f"--data.cache_dir with a writable folder") from error
    partial = path.with_suffix(f".{socket.gethostname()}-{os.getpid()}.partial")  # concurrent builders never collide
    images = np.lib.format.open_memmap(partial, mode="w+", dtype=np.uint8, shape=(len(files), *item_shape))
    bad: dict[int, str] = {}
    stop = threading.Event()

    def decode_rows(start: int, images: np.ndarray = images) -> int:
        rows = range(start, min(start + CHUNK, len(files)))
        for row in rows:
            if stop.is_set():
                break
            try:
                images[row] = decode(root / files[row])
            except DECODE_ERRORS as error:
                bad[row] = f"{type(error).__name__}: {error}"
                if stop_on_bad:
                    stop.set()
        return len(rows)

    try:
        with ThreadPoolExecutor(workers or os.cpu_count()) as pool, \
                tqdm(total=len(files), desc=desc, unit="img", disable=None) as bar:
            for done in pool.map(decode_rows, range(0, len(files), CHUNK)):
                bar.update(done)
        if stop_on_bad and bad:
            row = min(bad)
            raise GenlabError(f"cannot read {root / files[row]} ({bad[row]}); {bad_file_hint or 'remove it'}")
        images.flush()
        del images, decode_rows  # unmaps the file before it is renamed
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    write_json(path.with_suffix(".json"), {"count": len(files), "settings": settings,
                                          "bad": {str(row): reason for row, reason in sorted(bad.items())}})
    remove_stale(cache_dir, settings_key, keep=name)
    return DecodedImages(np.load(path, mmap_mode="c"), bad, path, built=True)


def write_json(path: Path, data: dict) -> None:
    """Write `data` to `path` atomically: readers see the old file or the whole new one."""
    partial = path.with_suffix(f".{socket.gethostname()}-{os.getpid()}.json-partial")
    partial.write_text(json.dumps(data))
    os.replace(partial, path)


def remove_stale(cache_dir: Path, settings_key: str, keep: str) -> None:
    """Delete the caches of the same settings for an older file list: a changed folder does not pile up copies."""
    for old in cache_dir.glob(f"{settings_key}-*"):
        if old.stem != keep and old.suffix in (".npy", ".json"):
            old.unlink(missing_ok=True)


def check_bad_files(decoded: DecodedImages, root: Path, files: Sequence[str], on_bad_file: str, dataset: str,
                    hint: str) -> None:
    """The files of `decoded` that could not be read: a GenlabError naming the first (`on_bad_file="error"`, also for
    a cache built earlier while skipping them), else one warning naming a few (they are left out of every split)."""
    if not decoded.bad:
        return
    bad = sorted(decoded.bad.items())
    if on_bad_file == "error":
        raise GenlabError(f"cannot read {root / files[bad[0][0]]} ({bad[0][1]}); {hint}")
    shown = ", ".join(f"{files[row]} ({reason})" for row, reason in bad[:SHOWN_BAD_FILES])
    more = ", ..." if len(bad) > SHOWN_BAD_FILES else ""
    rank_zero_warn(f"{dataset}: skipped {len(bad)} of {len(files)} files in {root} that could not be read: "
                   f"{shown}{more}")
