"""Streaming from a local LitData folder vs genlab's in-memory ImageFolder: images/s of the data path alone.

Writes (or reuses) the JPEG folder of benchmarks/imagefolder.py, decodes it once into ImageFolder's uint8 cache,
writes that into LitData's format with `optimize`, then times full epochs of each loader, every batch converted to
float in [0, 1] as training sees it (no model: this measures the loader, not the GPU).

    python benchmarks/streaming.py --num_images 5000 --workers 0 2
"""

import argparse
import json
import os
import shutil
import time
from pathlib import Path

import torch
from imagefolder import write_folder  # the same generated JPEGs as the ImageFolder benchmark

from genlab.datamodules import ImageFolder
from genlab.datamodules.streaming import Streaming, optimize


def images_per_second(loader: object, epochs: int) -> list[float]:
    """Images/s of each full pass over `loader`."""
    rates = []
    for _ in range(epochs):
        start, count = time.perf_counter(), 0
        for x, _ in loader:
            count += len(x)
            x.float().sum()  # touch the pixels, as a model's first layer would
        rates.append(round(count / (time.perf_counter() - start)))
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num_images", type=int, default=5000)
    parser.add_argument("--image_size", type=int, default=64)
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2], help="Streaming loader processes to try")
    parser.add_argument("--chunk_bytes", default="64MB")
    parser.add_argument("--root", type=Path, default=Path("data/bench_jpegs"))
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    write_folder(args.root, args.num_images)
    folder = ImageFolder(root=str(args.root), image_size=args.image_size, batch_size=args.batch_size,
                         val_fraction=0.0, test_fraction=0.0, cache_dir=str(args.root.parent / "bench_cache"))
    folder.prepare_data()  # decode once (reused by later runs)
    results = {"machine": f"{os.cpu_count()} CPUs, torch {torch.__version__}", "num_images": args.num_images,
               "image_size": args.image_size, "batch_size": args.batch_size}
    results["in_memory_imagefolder_img_s"] = images_per_second(folder.train_dataloader(), args.epochs)

    out = args.root.parent / "bench_litdata"
    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    optimize(folder, out, splits=["train"], chunk_bytes=args.chunk_bytes, progress=False)
    results["optimize_img_s"] = round(args.num_images / (time.perf_counter() - start))
    results["litdata_folder_mb"] = round(sum(f.stat().st_size for f in out.rglob("*")) / 2**20, 1)
    for workers in args.workers:
        data = Streaming(str(out), batch_size=args.batch_size, num_workers=workers, seed=0)
        results[f"streaming_{workers}_workers_img_s"] = images_per_second(data.train_dataloader(), args.epochs)
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
