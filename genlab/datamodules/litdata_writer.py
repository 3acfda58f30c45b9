"""The LitData writer behind `genlab data optimize`: any genlab datamodule written once into LitData's chunked
format, for the `Streaming` datamodule (streaming.py) to read.

    genlab data optimize --data ImageFolder --data.root my_images/ --data.image_size 64 --output my_images_litdata/

Each split is written as uint8 (C, H, W) images with int labels under `<output>/<split>` (LitData chunks and
`index.json`), then `<output>/genlab.json` (image_shape, num_classes, class_names, split sizes), whose
`FORMAT_VERSION` the reader checks.
"""

import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
from lightning import LightningDataModule
from torch import Tensor
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from ..errors import GenlabError
from .base import ImageDataModule
from .in_memory import InMemoryImages

SPLITS = ("train", "val", "test")
META_FILE = "genlab.json"
FORMAT_VERSION = 1
DEFAULT_CHUNK_BYTES = "64MB"  # LitData's advice: tens of MB per chunk, so object-store reads stay efficient
WRITE_BATCH = 256  # images gathered at a time while writing


def litdata_modules() -> tuple[object, object]:
    """LitData's (streaming, writer) modules, imported on first use: LitData is an optional dependency. Its PyPI
    version check (a network request at every dataset) is turned off: genlab touches the network only to download."""
    os.environ.setdefault("LITDATA_DISABLE_VERSION_CHECK", "1")
    try:
        import litdata.streaming.writer as writer
        import litdata as streaming
    except ImportError as error:
        raise GenlabError("streaming needs LitData: pip install 'genlab[streaming]' (or pip install litdata)") \
            from error
    return streaming, writer


def is_remote(path: str) -> bool:
    """An object-store URL (s3://, gs://, azure://, r2://, hf://) or LitData's `local:` stand-in for one."""
    return "://" in path or path.startswith("local:")


def uint8_batches(dataset: Dataset, num_workers: int = 0) -> Iterator[tuple[Tensor, Tensor]]:
    """One split as uint8 (B, C, H, W) images and int64 labels, in the split's own order: gathered from memory for
    in-memory datasets, else item by item (float images in [0, 1], back to the uint8 they were decoded from)."""
    if isinstance(dataset, InMemoryImages):
        rows = torch.arange(len(dataset.source)) if dataset.rows is None else dataset.rows
        for block in rows.split(WRITE_BATCH):
            yield dataset.source[block], dataset.source_labels[block]
        return
    for x, y in DataLoader(dataset, batch_size=WRITE_BATCH, num_workers=num_workers):
        yield x.mul(255).round_().to(torch.uint8), torch.as_tensor(y, dtype=torch.long)


def optimize(datamodule: ImageDataModule, output_dir: str | Path, splits: Sequence[str] = SPLITS,
             chunk_bytes: int | str = DEFAULT_CHUNK_BYTES, progress: bool = True) -> Path:
    """Write `splits` of `datamodule` into LitData's format under `output_dir/<split>`, then `genlab.json`.

    One process writes with LitData's `BinaryWriter` (the chunks `litdata.optimize` writes): the images are decoded
    already, so there is nothing to parallelise, and `litdata.optimize`'s worker processes would each need the
    datamodule. Images are stored as the datamodule holds them (uint8); per-batch transforms such as MNIST's dynamic
    binarisation are not baked in. `output_dir` must be a new or empty local folder (copy it to an object store
    afterwards, e.g. `aws s3 sync`). Returns the folder.
    """
    if is_remote(str(output_dir)):
        raise GenlabError(f"optimize writes to a local folder, not {output_dir}; write locally, then copy the folder "
                          f"to the object store")
    output = Path(output_dir).expanduser()
    if output.exists() and (not output.is_dir() or any(output.iterdir())):
        raise GenlabError(f"optimize: {output} already exists and is not empty; choose a new --output folder "
                          f"(or remove that one)")
    if not splits or any(split not in SPLITS for split in splits):
        raise ValueError(f"splits must be some of {', '.join(SPLITS)}, got {list(splits)!r}")
    _, writer_module = litdata_modules()
    datamodule.prepare_data()
    batch_size, datamodule.batch_size = datamodule.batch_size, 1  # writing needs no batches: never refuse a split
    try:
        datasets = {split: datamodule.dataset(split) for split in splits}
    finally:
        datamodule.batch_size = batch_size
    sizes = {}
    for split, dataset in datasets.items():
        sizes[split] = len(dataset)
        if sizes[split] == 0:  # e.g. val_fraction=0: no folder, and Streaming serves no such split
            continue
        writer = writer_module.BinaryWriter(str(output / split), chunk_bytes=chunk_bytes)
        index = 0
        with tqdm(total=len(dataset), desc=f"writing {split}", unit="img", disable=not progress) as bar:
            for images, labels in uint8_batches(dataset, getattr(datamodule, "num_workers", 0)):
                for image, label in zip(images.numpy(), labels.tolist(), strict=True):
                    writer[index] = {"image": image, "label": label}
                    index += 1
                bar.update(len(images))
        writer.done()
        writer.merge()
    meta = {"format": FORMAT_VERSION, "image_shape": list(datamodule.image_shape),
            "num_classes": datamodule.num_classes, "class_names": datamodule.class_names, "splits": sizes,
            "source": f"{type(datamodule).__module__}.{type(datamodule).__qualname__}"}
    (output / META_FILE).write_text(json.dumps(meta, indent=1))
    return output


def main(argv: list[str]) -> Path:
    """`genlab data optimize --data NAME [--data.* ...] --output DIR [--splits train val test] [--chunk_bytes 64MB]`:
    any datamodule, with the same flags as `genlab fit`, written for `--data Streaming`."""
    from ..arguments import names_class
    from ..names import check_class_names
    from ..parser import GenlabParser

    if argv[:1] != ["optimize"]:
        raise GenlabError(f"genlab data: unknown action {argv[0]!r}; the one action is optimize" if argv else
                          "genlab data: name an action: genlab data optimize --data NAME ... --output DIR")
    args = argv[1:]
    if not names_class(args, "data"):
        raise GenlabError("genlab data optimize: --data NAME is required (e.g. --data ImageFolder --data.root DIR)")
    check_class_names(args)
    parser = GenlabParser(prog="genlab data optimize", description=main.__doc__)
    parser.add_subclass_arguments(LightningDataModule, "data", required=True)
    parser.add_argument("--output", type=str | None, default=None, help="New or empty local folder to write to")
    parser.add_argument("--splits", type=list[str], default=list(SPLITS), help="Which splits to write")
    parser.add_argument("--chunk_bytes", type=int | str, default=DEFAULT_CHUNK_BYTES,
                        help="Size of LitData's chunks: bytes, or with a unit (64MB)")
    config = parser.parse_args(args)
    if not config.output:
        raise GenlabError("genlab data optimize: --output DIR is required: the new folder the chunks are written to")
    instantiate = getattr(parser, "instantiate", None) or parser.instantiate_classes  # jsonargparse >= 4.49
    datamodule = instantiate(config).data
    if not isinstance(datamodule, ImageDataModule):
        raise GenlabError(f"genlab data optimize: --data must be an ImageDataModule (e.g. ImageFolder, MNIST), got "
                          f"{type(datamodule).__name__}")
    output = optimize(datamodule, config.output, config.splits, config.chunk_bytes)
    print(output)
    return output
