"""ImageFolder and the decode-once cache: tiny folders written here, every format and failure a user's folder has."""

import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from test_datamodules import write_celeba

from genlab.callbacks import ConditionalGrid, LatentPCA
from genlab.cli import main
from genlab.datamodules import CelebA, ImageFolder
from genlab.datamodules.base import InMemoryImages
from genlab.datamodules.imagefolder import EXTENSIONS, split_rows
from genlab.errors import GenlabError
from genlab.models import CVAE, ConvVAE

QUIET = ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false", "--trainer.accelerator=cpu"]
TINY_CONV = ["--model.latent_dim=4", "--model.widths=[8, 16]"]
FORMATS = ["png", "jpg", "jpeg", "webp", "bmp", "tif", "tiff"]


def write_image(path: Path, size: tuple[int, int], mode: str = "RGB", seed: int = 0, **save) -> None:
    """A random image of `size` (width, height) in `mode`, saved in the format its suffix names."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (size[1], size[0], len(mode) if mode != "P" else 1), dtype=np.uint8)
    image = Image.fromarray(pixels.squeeze(-1) if pixels.shape[-1] == 1 else pixels, "L" if mode == "P" else mode)
    (image.convert("P") if mode == "P" else image).save(path, **save)


def mixed_folder(root: Path, per_class: int = 8) -> Path:
    """Two class folders of every format, size and mode, plus one corrupt and one zero-byte file and a stray .txt."""
    modes = ["RGB", "L", "RGBA", "P"]
    for k, cls in enumerate(["cats", "dogs"]):
        for i in range(per_class):
            fmt, mode = FORMATS[i % len(FORMATS)], modes[i % len(modes)]
            mode = "RGB" if fmt in ("jpg", "jpeg") and mode in ("RGBA", "P") else mode  # JPEG has no alpha/palette
            write_image(root / cls / f"{i:02d}.{fmt}", (12 + 7 * i, 30 - 2 * i), mode, seed=10 * k + i)
    good = (root / "cats" / "00.png").read_bytes()
    (root / "cats" / "truncated.png").write_bytes(good[: len(good) // 2])
    (root / "dogs" / "empty.jpg").write_bytes(b"")
    (root / "dogs" / "notes.txt").write_text("not an image")
    return root


def quiet(dm: ImageFolder) -> ImageFolder:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dm.setup()
    return dm


# ---- decoding ------------------------------------------------------------------------------------------------------

def test_mixed_folder_decodes_every_readable_image_with_labels_and_one_warning(tmp_path):
    dm = ImageFolder(root=str(mixed_folder(tmp_path)), image_size=16, batch_size=2, decode_workers=2)
    assert dm.class_names == ["cats", "dogs"] and dm.num_classes == 2 and dm.image_shape == (3, 16, 16)
    with pytest.warns(UserWarning, match=r"skipped 2 of 18 files .*cats/truncated\.png.*dogs/empty\.jpg") as caught:
        dm.setup()
    assert len([w for w in caught if "skipped" in str(w.message)]) == 1
    images, labels, rows = dm.tensors
    assert sorted(torch.cat(list(rows.values())).tolist()) == [r for r, n in enumerate(dm.files)
                                                               if n not in ("cats/truncated.png", "dogs/empty.jpg")]
    assert [int(labels[r]) for r, n in enumerate(dm.files)] == [n.startswith("dogs") for n in dm.files]
    x, y = dm.val_batch(100)
    assert x.shape[1:] == (3, 16, 16) and x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1
    assert set(y.tolist()) <= {0, 1}


def test_served_tensor_is_the_memmap_not_a_copy(tmp_path):
    dm = quiet(ImageFolder(root=str(mixed_folder(tmp_path)), image_size=8, batch_size=2))
    train = dm.dataset("train")
    assert isinstance(dm.decoded.images, np.memmap)
    assert train.source.data_ptr() == dm.decoded.images.ctypes.data  # gathered by index from the mapping
    assert dm.datasets["val"].source is train.source  # the splits share it
    x, _ = next(iter(dm.train_dataloader()))
    assert x.shape == (2, 3, 8, 8)


def solid(path: Path, size: tuple[int, int], colour: tuple, mode: str = "RGBA", **save) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, colour).save(path, **save)


def decode_one(tmp_path: Path, **options) -> np.ndarray:
    dm = quiet(ImageFolder(root=str(tmp_path), batch_size=1, val_fraction=0.0, test_fraction=0.0, **options))
    return dm.decoded.images[0]


def test_transparent_pixels_become_white_and_grey_becomes_three_equal_channels(tmp_path):
    solid(tmp_path / "a" / "clear.png", (10, 10), (255, 0, 0, 0))  # fully transparent red
    assert (decode_one(tmp_path / "a", image_size=4) == 255).all()
    solid(tmp_path / "b" / "grey.png", (10, 10), 77, mode="L")
    rgb = decode_one(tmp_path / "b", image_size=4)
    assert rgb.shape == (3, 4, 4) and (rgb == 77).all()
    solid(tmp_path / "c" / "red.png", (10, 10), (255, 0, 0), mode="RGB")
    grey = decode_one(tmp_path / "c", image_size=4, channels=1)
    assert grey.shape == (1, 4, 4) and (grey == 76).all()  # ITU-R 601 luma of pure red: 0.299 * 255


@pytest.mark.parametrize("resize, bright_rows", [("crop", range(8)), ("stretch", range(8)), ("pad", range(2, 6))])
def test_resize_modes_on_a_wide_white_image(tmp_path, resize, bright_rows):
    solid(tmp_path / "wide.png", (40, 20), (255, 255, 255), mode="RGB")
    image = decode_one(tmp_path, image_size=8, resize=resize)
    assert image.shape == (3, 8, 8)
    assert [r for r in range(8) if (image[:, r] == 255).all()] == list(bright_rows)  # pad: black bars, 2 rows each
    assert all((image[:, r] == 0).all() for r in range(8) if r not in bright_rows)


def test_exif_orientation_is_honoured(tmp_path):
    pixels = np.zeros((20, 40), dtype=np.uint8)
    pixels[:, 20:] = 255  # stored: wide, dark left half, bright right half
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display": shown tall, dark top, bright bottom
    Image.fromarray(pixels).save(tmp_path / "phone.jpg", exif=exif, quality=95)
    image = decode_one(tmp_path, image_size=8, channels=1, resize="pad")[0]
    assert (image[:, [0, 1, 6, 7]] == 0).all()  # tall: the padding is left and right
    assert image[1, 3:5].max() < 30 and image[6, 3:5].min() > 225


# ---- bad input: one line each ----------------------------------------------------------------------------------------

def one_line(error: pytest.ExceptionInfo) -> str:
    assert "\n" not in str(error.value)
    return str(error.value)


def test_empty_folder_and_unknown_extensions_name_the_folder_and_extensions(tmp_path):
    with pytest.raises(GenlabError) as error:
        ImageFolder(root=str(tmp_path)).setup()
    assert str(tmp_path) in one_line(error) and all(ext in str(error.value) for ext in EXTENSIONS)
    (tmp_path / "x.gif").write_bytes(b"GIF89a")
    with pytest.raises(GenlabError, match="found only 1 other files, e.g. x.gif"):
        ImageFolder(root=str(tmp_path)).num_classes
    with pytest.raises(GenlabError, match="is not a folder"):
        ImageFolder(root=str(tmp_path / "x.gif")).setup()


@pytest.mark.parametrize("options, shown", [({"image_size": 0}, "image_size"), ({"channels": 2}, "channels"),
                                            ({"resize": "zoom"}, "resize"), ({"on_bad_file": "ignore"}, "on_bad_file"),
                                            ({"test_fraction": 0.95}, "test_fraction")])
def test_bad_settings_are_one_line_errors(options, shown):
    with pytest.raises(ValueError, match=shown) as error:
        ImageFolder(root=".", **options)
    one_line(error)


def test_on_bad_file_error_stops_at_the_unreadable_file(tmp_path):
    mixed_folder(tmp_path, per_class=2)
    with pytest.raises(GenlabError, match=r"cannot read .*(truncated\.png|empty\.jpg).*on_bad_file warn") as error:
        ImageFolder(root=str(tmp_path), image_size=8, on_bad_file="error").setup()
    one_line(error)


def test_cli_reports_image_size_zero_in_one_line(tmp_path):
    write_image(tmp_path / "a.png", (8, 8))
    with pytest.raises(GenlabError, match="image_size must be an integer >= 1, got 0") as error:
        main(["fit", "--data=ImageFolder", f"--data.root={tmp_path}", "--data.image_size=0", *QUIET])
    one_line(error)


# ---- splits and the cache --------------------------------------------------------------------------------------------

def test_flat_folder_is_unlabelled(tmp_path):
    for i in range(6):
        write_image(tmp_path / f"{i}.png", (10, 9 + i), seed=i)
    write_image(tmp_path / "sub" / "deeper.png", (10, 10))  # images below root count too
    dm = quiet(ImageFolder(root=str(tmp_path), image_size=8, batch_size=2))
    assert dm.class_names is None and dm.num_classes is None and len(dm.files) == 7
    assert dm.load_split("train")[1] is None and (dm.tensors[1] == 0).all()


def split_of_each(names: list[str], seed: int = 0) -> dict[str, str]:
    return {names[row]: split for split, rows in split_rows(names, seed, 0.1, 0.1).items() for row in rows}


def test_split_is_seeded_by_file_name_and_stable_when_files_are_added():
    names = [f"img_{i:04d}.jpg" for i in range(2000)]
    first = split_of_each(names)
    counts = {s: list(first.values()).count(s) for s in ("train", "val", "test")}
    assert abs(counts["val"] - 200) < 60 and abs(counts["test"] - 200) < 60  # binomial, sd ~13
    more = split_of_each(names + [f"new_{i}.jpg" for i in range(500)])
    assert all(more[n] == first[n] for n in names)
    reseeded = split_of_each(names, seed=1)
    assert sum(reseeded[n] != first[n] for n in names) > 100  # another seed, another split


def test_a_tiny_folder_still_gets_one_val_and_one_test_image():
    rows = split_rows(["a.png", "b.png", "c.png"], 0, 0.1, 0.1)
    assert sorted(len(r) for r in rows.values()) == [1, 1, 1]
    assert split_rows(["a.png", "b.png"], 0, 0.0, 0.0) == {"train": [0, 1], "val": [], "test": []}


def test_cache_is_reused_then_rebuilt_when_a_file_changes(tmp_path):
    for i in range(4):
        write_image(tmp_path / f"{i}.png", (12, 12), seed=i)
    options = dict(root=str(tmp_path), image_size=8, batch_size=1, val_fraction=0.0, test_fraction=0.0)
    first = quiet(ImageFolder(**options)).decoded
    second = quiet(ImageFolder(**options)).decoded
    assert first.built and not second.built and second.path == first.path
    assert np.array_equal(first.images, second.images)
    solid(tmp_path / "0.png", (12, 12), (255, 255, 255), mode="RGB")  # new content (size, mtime)
    os.utime(tmp_path / "0.png", ns=(1, 1))
    third = quiet(ImageFolder(**options)).decoded
    assert third.built and third.path != first.path and not first.path.exists()  # stale cache removed
    assert (third.images[0] == 255).all() and np.array_equal(third.images[1:], first.images[1:])
    other = quiet(ImageFolder(**options | {"channels": 1})).decoded  # other settings: a cache of their own
    assert other.built and other.images.shape == (4, 1, 8, 8) and third.path.exists()


def test_cache_dir_option(tmp_path):
    write_image(tmp_path / "data" / "a.png", (8, 8))
    dm = quiet(ImageFolder(root=str(tmp_path / "data"), image_size=8, batch_size=1, val_fraction=0.0,
                           test_fraction=0.0, cache_dir=str(tmp_path / "cache")))
    assert dm.decoded.path.parent == tmp_path / "cache" and not (tmp_path / "data" / ".genlab_cache").exists()


# ---- class names in figures, and the CLI ---------------------------------------------------------------------------

def test_class_names_reach_the_latent_legend_and_the_conditional_grid(tmp_path):
    dm = quiet(ImageFolder(root=str(mixed_folder(tmp_path)), image_size=16, batch_size=2, val_fraction=0.5,
                             test_fraction=0.0))
    fig = LatentPCA(num_points=8, overlay_prior=False).draw(ConvVAE(image_shape=(3, 16, 16), latent_dim=4,
                                                                    widths=(8, 16)), dm)
    assert {t.get_text() for t in fig.axes[0].get_legend().get_texts()} == {"cats", "dogs"}
    cvae = CVAE(image_shape=(3, 16, 16), latent_dim=2, hidden=(16,), num_classes=2)
    fig = ConditionalGrid(num_samples=2).draw(cvae, dm)
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == ["cats", "dogs"]


def test_cli_fit_on_an_image_folder_writes_last_checkpoint(tmp_path):
    mixed_folder(tmp_path / "images")
    main(["fit", "--model=ConvVAE", "--data=ImageFolder", f"--data.root={tmp_path / 'images'}",
          "--data.image_size=16", "--data.batch_size=4", "--trainer.max_epochs=1", "--figures=false",
          f"--trainer.default_root_dir={tmp_path / 'runs'}", *TINY_CONV, *QUIET])
    last = list((tmp_path / "runs").rglob("last.ckpt"))
    assert len(last) == 1 and ConvVAE.load_from_checkpoint(last[0]).image_shape == (3, 16, 16)


# ---- CelebA on the same cache ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("absent_parts", [(), (1, 2)])
def test_celeba_cache_serves_the_same_splits_and_pixels_as_lazy_decoding(tmp_path, absent_parts):
    listed = {f"{k:06d}.jpg": (k - 7) // 2 if k > 8 else 0 for k in range(1, 13)}  # 8 train, 2 val, 2 test
    write_celeba(tmp_path, listed, absent=tuple(n for n, part in listed.items() if part in absent_parts))
    options = dict(root=str(tmp_path), image_size=16, crop=32, batch_size=2, verify=False, val_fraction=0.25)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # absent official splits: warned about, tested in test_datamodules
        lazy, cached = CelebA(**options), CelebA(**options, cache=True, cache_dir=str(tmp_path / "cache"))
        lazy.setup()
        cached.prepare_data()
        cached.setup()
    for split in ("train", "val", "test"):
        expected = torch.stack([x for x, _ in lazy.datasets[split]])
        x, y = next(iter(cached._loader(split)))
        assert isinstance(cached.datasets[split], InMemoryImages) and (y == 0).all()
        assert len(cached.datasets[split]) == len(lazy.datasets[split])
        assert torch.allclose(x, expected[:len(x)], atol=2 / 255)  # solid colours: only JPEG rounding differs
    assert cached.decoded.path.parent == tmp_path / "cache" and cached.decoded.built
