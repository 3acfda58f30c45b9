"""ImageFolder (decode once into a uint8 memmap, gather batches by index) vs torchvision's ImageFolder + DataLoader.

Writes a folder of JPEGs of mixed sizes (in class subfolders, so torchvision can read it too), then, each variant in
a fresh process: images/s of the first epoch (for ImageFolder: including building its cache) and of later epochs,
and host memory (peak RSS; for ImageFolder also the anonymous RSS, which leaves out the memmap's page-cache pages).
With --train each batch also trains a ConvVAE step, as a run would; without, only the loader is timed.

    python benchmarks/imagefolder.py --num_images 3000           # up to 20000 (--num_images 20000)
"""

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image


def write_folder(root: Path, num_images: int, classes: int = 4, seed: int = 0) -> None:
    """JPEGs 96-480 px a side, random aspect ratios: smooth gradients plus noise (compress and decode like photos)."""
    done = root / "done.json"
    if done.is_file() and json.loads(done.read_text()) == {"num_images": num_images, "seed": seed}:
        return
    shutil.rmtree(root, ignore_errors=True)
    rng = np.random.default_rng(seed)
    for i in range(num_images):
        width, height = rng.integers(96, 481, 2)
        ramp = np.linspace(0, 1, width)[None, :, None] * rng.random(3) + np.linspace(0, 1, height)[:, None, None]
        pixels = (ramp * 120 + rng.normal(0, 20, (height, width, 3)) + 60).clip(0, 255).astype(np.uint8)
        path = root / f"class_{i % classes}" / f"{i:06d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(path, quality=90)
    done.write_text(json.dumps({"num_images": num_images, "seed": seed}))


def rss_anon_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def peak_rss_mb(who: int = resource.RUSAGE_SELF) -> float:
    return resource.getrusage(who).ru_maxrss / 1024


def run_variant(args: argparse.Namespace) -> dict:
    """Time `args.epochs` epochs of one loader in this process; returns the numbers as a dict."""
    import torch

    from genlab.models import ConvVAE

    torch.set_num_threads(args.threads)
    model = ConvVAE(image_shape=(3, args.image_size, args.image_size), latent_dim=64) if args.train else None
    optimizer = torch.optim.Adam(model.parameters(), 1e-3) if model is not None else None
    baseline = {"peak_rss_mb_before_data": peak_rss_mb(), "rss_anon_mb_before_data": rss_anon_mb()}
    start = time.perf_counter()
    if args.variant == "genlab":
        from genlab.datamodules import ImageFolder

        data = ImageFolder(root=str(args.root), image_size=args.image_size, batch_size=args.batch_size,
                           val_fraction=0.0, test_fraction=0.0, cache_dir=str(args.cache_dir))
        data.prepare_data()
        loader = data.train_dataloader()
    else:
        from torchvision import datasets, transforms

        transform = transforms.Compose([transforms.Resize(args.image_size), transforms.CenterCrop(args.image_size),
                                        transforms.ToTensor()])
        dataset = datasets.ImageFolder(str(args.root), transform=transform)
        loader = torch.utils.data.DataLoader(dataset, batch_size=args.batch_size, shuffle=True,
                                             num_workers=args.workers, persistent_workers=args.workers > 0)
    epochs = []
    for _ in range(args.epochs):
        seen = 0
        for x, _ in loader:
            if optimizer is not None:
                loss = model.loss(x.float())["loss"]
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
            seen += len(x)
        now = time.perf_counter()
        epochs.append(seen / (now - start))
        start = now
    children = peak_rss_mb(resource.RUSAGE_CHILDREN)  # DataLoader workers (largest one)
    return {"variant": args.variant, "images": seen, "images_per_s_by_epoch": [round(v, 1) for v in epochs],
            "peak_rss_mb": round(peak_rss_mb(), 1), "peak_rss_mb_largest_worker": round(children, 1),
            "rss_anon_mb_end": round(rss_anon_mb(), 1), **{k: round(v, 1) for k, v in baseline.items()}}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num_images", type=int, default=3000)
    parser.add_argument("--image_size", type=int, default=64)
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--workers", type=int, default=os.cpu_count(), help="torchvision DataLoader workers")
    parser.add_argument("--threads", type=int, default=1, help="torch threads for the training step")
    parser.add_argument("--train", action="store_true", help="also train a ConvVAE step on every batch")
    parser.add_argument("--root", type=Path, default=Path("/tmp/genlab_bench_images"))
    parser.add_argument("--variant", choices=["genlab", "torchvision"], help=argparse.SUPPRESS)
    parser.add_argument("--cache_dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.variant:  # a child process: one variant, its numbers as JSON on the last line
        print(json.dumps(run_variant(args)))
        return
    write_folder(args.root, args.num_images)
    cache_dir = args.root.parent / f"{args.root.name}_cache"
    shutil.rmtree(cache_dir, ignore_errors=True)  # the first epoch includes decoding every file once
    uint8_mb = args.num_images * 3 * args.image_size**2 / 2**20
    print(f"{args.num_images} JPEGs in {args.root}; uint8 dataset at {args.image_size}px: {uint8_mb:.0f} MB; "
          f"{os.cpu_count()} cores; torchvision num_workers={args.workers}; train step: {args.train}")
    own = list(argv if argv is not None else sys.argv[1:])
    for variant in ("genlab", "torchvision"):
        out = subprocess.run([sys.executable, __file__, *own, "--variant", variant, "--cache_dir", str(cache_dir)],
                             check=True, capture_output=True, text=True).stdout
        print(json.dumps(json.loads(out.strip().splitlines()[-1])))


if __name__ == "__main__":
    main()
