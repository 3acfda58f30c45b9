"""ImageFolder: your own folder of images, any formats and sizes, decoded once into a memory-mapped uint8 cache."""

import hashlib
import os
from functools import cached_property, partial
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from PIL import Image, ImageOps
from torch import Tensor
from torch.utils.data import Dataset

from ..errors import GenlabError
from .base import ImageDataModule
from .cache import DecodedImages, check_bad_files, decoded_images, default_cache_dir
from .in_memory import InMemoryImages

EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
WHITE = (255, 255, 255, 255)  # what transparent pixels become
PAD_VALUE = 0  # the border of resize="pad"


def decode_image(path: Path, image_size: int, channels: int, resize: str) -> np.ndarray:
    """One image file -> uint8 (channels, size, size): EXIF orientation applied, alpha composited on white, then
    resized so the short side fits and centre-cropped ("crop"), the long side fits and padded ("pad"), or both sides
    scaled ("stretch")."""
    size = image_size
    if path.stat().st_size == 0:
        raise OSError("empty file (0 bytes)")
    with Image.open(path) as image:
        image.draft("L" if channels == 1 else "RGB", (size, size))  # JPEG: decode at a reduced scale (>= size)
        image = to_mode(ImageOps.exif_transpose(image), channels)
    width, height = image.size
    if resize == "stretch":
        image = image.resize((size, size), Image.Resampling.BICUBIC, reducing_gap=3.0)
    else:
        scale = size / (min(width, height) if resize == "crop" else max(width, height))
        fitted = (max(1, round(width * scale)), max(1, round(height * scale)))
        image = image.resize(fitted, Image.Resampling.BICUBIC, reducing_gap=3.0)
        left, top = (fitted[0] - size) // 2, (fitted[1] - size) // 2
        if resize == "crop":
            image = image.crop((left, top, left + size, top + size))
        else:
            canvas = Image.new(image.mode, (size, size), PAD_VALUE if channels == 1 else (PAD_VALUE,) * 3)
            canvas.paste(image, (-left, -top))
            image = canvas
    pixels = np.asarray(image, dtype=np.uint8)
    return pixels[None] if channels == 1 else pixels.transpose(2, 0, 1)


def to_mode(image: Image.Image, channels: int) -> Image.Image:
    """Grey ("L") or "RGB": palettes expanded, transparency composited on white, 16-bit grey scaled to 8 bits."""
    if image.mode == "P" or image.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in image.info:
        image = Image.alpha_composite(Image.new("RGBA", image.size, WHITE), image.convert("RGBA"))
    elif image.mode.startswith("I;16"):
        image = Image.fromarray((np.asarray(image).astype(np.uint16) >> 8).astype(np.uint8))
    return image.convert("L" if channels == 1 else "RGB")


def name_hash(name: str, seed: int) -> float:
    """A seeded hash of a file's relative name, uniform in [0, 1)."""
    return int.from_bytes(hashlib.blake2b(f"{seed}:{name}".encode(), digest_size=8).digest(), "big") / 2**64


def split_rows(names: list[str], seed: int, val_fraction: float, test_fraction: float) -> dict[str, list[int]]:
    """Rows of `names` in "train", "val" and "test", by each name's hash alone: adding files never moves another
    file, and every process (DDP rank) agrees without communicating. A split with a positive fraction that the hash
    leaves empty (a tiny folder) takes the train file of lowest hash, so figures and tests always have images."""
    hashes = [name_hash(name, seed) for name in names]
    rows: dict[str, list[int]] = {"train": [], "val": [], "test": []}
    for row, u in enumerate(hashes):
        rows["test" if u < test_fraction else "val" if u < test_fraction + val_fraction else "train"].append(row)
    for split, fraction in (("val", val_fraction), ("test", test_fraction)):
        if fraction > 0 and not rows[split] and len(rows["train"]) > 1:
            lowest = min(range(len(rows["train"])), key=lambda i: hashes[rows["train"][i]])
            rows[split].append(rows["train"].pop(lowest))
    return rows


class ImageFolder(ImageDataModule):
    """Every image under `root` (PNG, JPEG, WebP, BMP, TIFF; any sizes), as (channels, image_size, image_size).

    Labels: when every image sits in a subfolder of `root` and there are two or more such subfolders, each
    subfolder is a class (sorted names -> 0, 1, ...; `class_names`); otherwise the folder is unlabelled (images
    anywhere below `root` are used). Hidden files and folders are ignored.

    Splits: each file goes to test (`test_fraction`), val (`val_fraction`) or train by a seeded hash of its relative
    name, so adding files leaves every other file where it was (`split_rows`). Decoded once (in parallel, with a
    progress bar) into a uint8 memmap under `cache_dir` (default `root/.genlab_cache`); batches are gathered from it
    by index.

    Args:
        root: the folder of images (searched recursively); None: $GENLAB_DATA, else ./data.
        image_size: side of the square images served, in pixels.
        channels: 1 (grey) or 3 (RGB); images of the other kind are converted.
        resize: "crop" (short side to image_size, centre crop), "pad" (long side, centred on black) or "stretch".
        on_bad_file: "warn" skips unreadable files (one warning naming them), "error" stops at the first one.
        test_fraction: share of files held out as the test split.
        val_fraction: share of files held out as the val split.
        cache_dir: where the decoded cache lives; None: `root/.genlab_cache`.
        decode_workers: threads decoding the first time (None: one per core).
    """

    official_val = True  # the three splits come from the file-name hash, not from the base's random val split

    def __init__(self, root: str | None = None, image_size: int = 64, channels: int = 3,
                 resize: Literal["crop", "pad", "stretch"] = "crop", on_bad_file: Literal["warn", "error"] = "warn",
                 test_fraction: float = 0.1, cache_dir: str | None = None, decode_workers: int | None = None,
                 **kwargs) -> None:
        super().__init__(root=root, **kwargs)
        if not isinstance(image_size, int) or image_size < 1:
            raise ValueError(f"image_size must be an integer >= 1, got {image_size!r}")
        if channels not in (1, 3):
            raise ValueError(f"channels must be 1 (grey) or 3 (RGB), got {channels!r}")
        if resize not in ("crop", "pad", "stretch"):
            raise ValueError(f"resize must be crop, pad or stretch, got {resize!r}")
        if on_bad_file not in ("warn", "error"):
            raise ValueError(f"on_bad_file must be warn or error, got {on_bad_file!r}")
        if not 0 <= test_fraction < 1 or test_fraction + self.val_fraction >= 1:
            raise ValueError(f"test_fraction must be in [0, 1) and leave some training images; got "
                             f"test_fraction={test_fraction!r} with val_fraction={self.val_fraction!r}")
        if decode_workers is not None and decode_workers < 1:
            raise ValueError(f"decode_workers must be >= 1 (or None for one per core), got {decode_workers!r}")
        self.image_size, self.channels, self.resize, self.on_bad_file = image_size, channels, resize, on_bad_file
        self.test_fraction, self.decode_workers = test_fraction, decode_workers
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir else None
        self.image_shape = (channels, image_size, image_size)

    # ---- what is in the folder (listed once, before anything is decoded) --------------------------------------------

    @cached_property
    def listing(self) -> tuple[list[str], list[str] | None]:
        """(relative names of the image files, sorted; class names or None when unlabelled)."""
        if not self.root.is_dir():
            raise GenlabError(f"ImageFolder: {self.root} is not a folder; point --data.root at a folder of images")
        files, others = [], []
        for folder, subfolders, names in os.walk(self.root, followlinks=True):
            subfolders[:] = [d for d in subfolders if not d.startswith(".")]
            for name in names:
                if not name.startswith("."):
                    path = os.path.relpath(os.path.join(folder, name), self.root).replace(os.sep, "/")
                    (files if name.lower().endswith(EXTENSIONS) else others).append(path)
        if not files:
            found = f"; found only {len(others)} other files, e.g. {others[0]}" if others else ""
            raise GenlabError(f"ImageFolder: no images in {self.root} or its subfolders (looked for "
                              f"{', '.join(EXTENSIONS)}){found}")
        files.sort()
        classes = sorted({name.split("/")[0] for name in files}) if all("/" in name for name in files) else []
        return files, classes if len(classes) >= 2 else None

    @property
    def files(self) -> list[str]:
        return self.listing[0]

    @property
    def class_names(self) -> list[str] | None:
        return self.listing[1]

    @property
    def num_classes(self) -> int | None:
        return None if self.class_names is None else len(self.class_names)

    # ---- decoding, cached --------------------------------------------------------------------------------------------

    @cached_property
    def decoded(self) -> DecodedImages:
        """The decoded cache, built on first use (by `prepare_data` under a Trainer: once per machine)."""
        settings = {"image_size": self.image_size, "channels": self.channels, "resize": self.resize}
        hint = "remove it, or pass --data.on_bad_file warn to skip unreadable files"
        decoded = decoded_images(self.root, self.files, partial(decode_image, **settings), self.image_shape, settings,
                                 self.cache_dir or default_cache_dir(self.root), self.decode_workers,
                                 stop_on_bad=self.on_bad_file == "error", bad_file_hint=hint,
                                 desc=f"decoding {self.root}")
        check_bad_files(decoded, self.root, self.files, self.on_bad_file, "ImageFolder", hint)
        return decoded

    @cached_property
    def tensors(self) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        """(all images as a uint8 tensor over the memmap, labels, rows of each split), unreadable files left out."""
        images = torch.from_numpy(self.decoded.images)  # shares the mapping: nothing is read until indexed
        classes = {name: k for k, name in enumerate(self.class_names or [])}
        labels = torch.tensor([classes.get(name.split("/")[0], 0) for name in self.files], dtype=torch.long)
        good = [row for row in range(len(self.files)) if row not in self.decoded.bad]
        rows = split_rows([self.files[row] for row in good], self.seed, self.val_fraction, self.test_fraction)
        return images, labels, {split: torch.tensor([good[i] for i in r], dtype=torch.long)
                                for split, r in rows.items()}

    # ---- ImageDataModule -----------------------------------------------------------------------------------------

    def prepare_data(self) -> None:
        super().prepare_data()
        self.decoded  # noqa: B018 - builds the cache on one process per machine, before the ranks set up

    def load_split(self, split: str) -> tuple[Tensor, Tensor | None]:
        """A copy of one split's images and labels (the datamodule itself serves them from the memmap)."""
        self.check_split(split)
        images, labels, rows = self.tensors
        return images[rows[split]], None if self.class_names is None else labels[rows[split]]

    def make_dataset(self, split: str) -> Dataset:
        self.check_split(split)
        images, labels, rows = self.tensors
        return InMemoryImages(images, labels, rows[split])
