"""Images per second of the training input pipeline (read, decode, augment, normalise, batch).

  # CamVid, 352x480 crops, one worker process with one thread:
  python scripts/benchmark_data.py --name camvid --root /data/camvid --crop 352 480 \
      --num-workers 1 --num-threads 1
  # 2048x1024 Cityscapes-layout PNGs generated into a folder (kept for reuse), 1024x1024 crops:
  python scripts/benchmark_data.py --synthetic-cityscapes /tmp/synthetic_cityscapes --crop 1024 1024 \
      --num-workers 1 --num-threads 1

Prints the protocol (machine, load, versions, settings) and the figures: pipeline images/s, images/s
per worker process, and single-thread milliseconds per image for reading+decoding and for the
transform alone. The load average is printed before and after, so contended runs can be told apart.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from bisenet_jax.benchmarks.machine import child_pids, cpu_name, cpu_seconds, load_average
from bisenet_jax.data import create_source, create_train_iterator, default_data_config
from bisenet_jax.data.pipeline import train_transform

# labelIds that occur in Cityscapes annotations (19 evaluated classes and a few ignored ones).
_CITYSCAPES_IDS = (0, 1, 4, 7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33)


def synthetic_street_scene(rng: np.random.Generator, height: int = 1024, width: int = 2048, noise: float = 1.0):
    """A natural-looking RGB image and a labelIds map: multi-octave colour noise plus polygons.

    Smooth structure at every scale plus mild pixel noise give PNG files of about 2.7 MB, a little
    more than the average real Cityscapes frame (the 5,000 leftImg8bit frames take about 11 GB), so
    decoding costs at least what it costs on the real data.
    """
    image = np.full((height, width, 3), 110.0, np.float32)
    for cells, amplitude in ((4, 0.5), (16, 0.25), (64, 0.15), (256, 0.1)):
        coarse = rng.integers(0, 256, (cells, cells * 2, 3), dtype=np.uint8)
        octave = np.asarray(Image.fromarray(coarse).resize((width, height), Image.BICUBIC), np.float32)
        image += amplitude * (octave - 128.0)
    shapes = Image.new("RGB", (width, height))
    mask = Image.new("L", (width, height), 0)
    label = Image.new("L", (width, height), 7)  # road
    for _ in range(40):
        x0, y0 = rng.integers(0, width), rng.integers(0, height)
        points = [(int(x0 + rng.integers(-300, 300)), int(y0 + rng.integers(-200, 200))) for _ in range(rng.integers(3, 7))]
        ImageDraw.Draw(shapes).polygon(points, fill=tuple(int(c) for c in rng.integers(0, 256, 3)))
        ImageDraw.Draw(mask).polygon(points, fill=255)
        ImageDraw.Draw(label).polygon(points, fill=int(rng.choice(_CITYSCAPES_IDS)))
    alpha = 0.6 * np.asarray(mask, np.float32)[..., None] / 255.0
    image = image * (1 - alpha) + alpha * np.asarray(shapes, np.float32)
    image += rng.normal(0.0, noise, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8), np.asarray(label)


def write_synthetic_cityscapes(root: Path, count: int, seed: int = 0) -> Path:
    """Writes `count` 2048x1024 train frames in the official layout under root (once; reused after)."""
    cities = ("aachen", "bochum", "cologne")
    done = sorted((root / "leftImg8bit" / "train").glob("*/*_leftImg8bit.png"))
    if len(done) >= count:
        return root
    rng = np.random.default_rng(seed)
    for i in range(count):
        city = cities[i % len(cities)]
        base = f"{city}_000000_{i:06d}"
        image, label = synthetic_street_scene(rng)
        for folder, name, array in (("leftImg8bit", "leftImg8bit", image), ("gtFine", "gtFine_labelIds", label)):
            path = root / folder / "train" / city / f"{base}_{name}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(array).save(path)
    return root


def single_thread_costs(config, count: int) -> tuple[float, float]:
    """(ms per image to read and decode, ms per image for the training transform), in this thread."""
    source = create_source(config, config.train_split)
    transform = train_transform(config, source.info)
    rng = np.random.default_rng(0)
    indices = [int(i) for i in rng.permutation(len(source))[:count]]
    start = time.perf_counter()
    records = [source[i] for i in indices]
    read = time.perf_counter() - start
    start = time.perf_counter()
    for record in records:
        transform.random_map(record, rng)
    return 1000 * read / len(records), 1000 * (time.perf_counter() - start) / len(records)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--name", default="demo", help="dataset name (data_config.name)")
    parser.add_argument("--root", default="", help="dataset folder (data_config.root)")
    parser.add_argument("--synthetic-cityscapes", default="", metavar="DIR",
                        help="generate (once) 2048x1024 Cityscapes-layout PNGs in DIR and benchmark them")
    parser.add_argument("--synthetic-count", type=int, default=16, help="frames to generate")
    parser.add_argument("--crop", type=int, nargs=2, default=(1024, 1024), metavar=("H", "W"))
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--num-workers", type=int, default=1)
    parser.add_argument("--num-threads", type=int, default=1, help="threads per process")
    parser.add_argument("--num-batches", type=int, default=20, help="timed batches")
    parser.add_argument("--warmup-batches", type=int, default=2,
                        help="untimed batches first (worker start; with --cache-gb and no worker process, an epoch's "
                             "worth fills the cache)")
    parser.add_argument("--cache-gb", type=float, default=0.0,
                        help="data_config.cache_gb: GiB of decoded records kept in memory per process (0: off)")
    parser.add_argument("--single-thread-images", type=int, default=8,
                        help="images for the single-thread decode / transform costs (0 to skip)")
    args = parser.parse_args(argv)

    config = default_data_config()
    config.name, config.root = args.name, args.root
    if args.synthetic_cityscapes:
        print(f"Writing / reusing {args.synthetic_count} synthetic frames in {args.synthetic_cityscapes} ...")
        write_synthetic_cityscapes(Path(args.synthetic_cityscapes), args.synthetic_count)
        config.name, config.root = "cityscapes", args.synthetic_cityscapes
    config.crop_size = tuple(args.crop)
    config.num_workers = args.num_workers
    config.num_threads = args.num_threads
    config.cache_gb = args.cache_gb

    source = create_source(config, config.train_split)
    first = source[0]
    load_before = load_average()
    print("== Protocol")
    print(f"machine: {cpu_name()}, {os.cpu_count()} logical CPUs; python {platform.python_version()}, "
          f"numpy {np.__version__}, pillow {Image.__version__}")
    print(f"load average before (1/5/15 min): {load_before}")
    print(f"dataset: {config.name} at {config.root or '(embedded)'}, {len(source)} train images, "
          f"first image {first['image'].shape[1]}x{first['image'].shape[0]}")
    print(f"pipeline: crop {args.crop[0]}x{args.crop[1]}, scale {tuple(config.scale_range)}, flip, jitter "
          f"{config.color_jitter}, float32 normalised output; batch {args.batch_size}, "
          f"workers {args.num_workers}, threads/process {args.num_threads}, cache_gb {args.cache_gb}; "
          f"{args.warmup_batches} warm-up + {args.num_batches} timed batches")

    iterator = create_train_iterator(config, args.batch_size, seed=0, process_index=0, process_count=1)
    try:
        for _ in range(args.warmup_batches):
            next(iterator)
        workers = child_pids(os.getpid())
        cpu_before = {pid: cpu_seconds(pid) for pid in [os.getpid(), *workers]}
        start = time.perf_counter()
        for _ in range(args.num_batches):
            shape = next(iterator)["image"].shape
        elapsed = time.perf_counter() - start
        cpu = {pid: cpu_seconds(pid) - before for pid, before in cpu_before.items()}
    finally:
        iterator.close()
    assert shape == (args.batch_size, *args.crop, 3), shape
    load_after = load_average()
    images_per_second = args.num_batches * args.batch_size / elapsed
    processes = max(1, args.num_workers)
    print("== Figures")
    print(f"pipeline: {images_per_second:.1f} images/s ({elapsed:.1f} s for {args.num_batches * args.batch_size} images)")
    print(f"per worker process: {images_per_second / processes:.1f} images/s "
          f"({processes} {'worker process' if args.num_workers else 'in-process pipeline'}"
          f"{'es' if processes > 1 else ''}, {args.num_threads} thread(s) each)")
    images = args.num_batches * args.batch_size
    worker_cpu = sum(cpu[pid] for pid in workers)
    print(f"CPU time per image: main process {1000 * cpu[os.getpid()] / images:.1f} ms"
          + (f", worker processes {1000 * worker_cpu / images:.1f} ms" if args.num_workers else ""))
    busy = worker_cpu if args.num_workers else cpu[os.getpid()]
    print(f"per worker process with a core to itself (images per CPU-second of the "
          f"{'workers' if args.num_workers else 'pipeline process'}): {images / busy:.1f} images/s")
    if args.single_thread_images:
        read_ms, transform_ms = single_thread_costs(config, args.single_thread_images)
        print(f"single thread, per image: read+decode {read_ms:.1f} ms, transform {transform_ms:.1f} ms "
              f"(-> {1000 / (read_ms + transform_ms):.1f} images/s before batching)")
    print(f"load average after (1/5/15 min): {load_after}"
          f"{'  <- contended: other processes were using the CPUs before the run' if load_before[0] > 0.5 else ''}")


if __name__ == "__main__":
    main()
