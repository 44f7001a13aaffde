"""FID feature extraction: pytorch-fid's pipeline vs aigc's, side by side, same images and weights.

    .venv/bin/python benches/bench_fid.py [--n 100] [--size 32] [--reps 3] [--device cpu] [--threads T]

Both read the same folder of PNGs and use the same weights file (a seeded random one with the
real file's layout, unless --weights names the real one). pytorch-fid runs as its command line
does: ``get_activations`` with batch 50 and ``min(8, cpus)`` DataLoader workers. The runs are
interleaved (ours, theirs, ours, theirs...) after a warm-up so that load from other processes
hits both alike; the best rate of each is reported (and every rate, with --json), with the
largest feature difference.
Needs the dev extra (pytorch-fid).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from unittest import mock

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aigc_cli.metrics.features import Extractor, FolderReader, list_images  # noqa: E402
from aigc_cli.metrics.testing import random_state_dict  # noqa: E402


def make_images(folder: Path, n: int, size: int, seed: int = 0) -> list[Path]:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    for i in range(n):
        cy, cx, r = rng.uniform(0.25, 0.75, 2).tolist() + [rng.uniform(0.1, 0.4)]
        blob = (((yy / size - cy) ** 2 + (xx / size - cx) ** 2) < r * r)[..., None] * rng.uniform(60, 255, 3)
        img = np.clip(blob + rng.normal(0, 25, (size, size, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(img).save(folder / f"{i:05d}.png")
    return list_images(folder)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=100, help="images")
    p.add_argument("--size", type=int, default=32, help="image side in pixels")
    p.add_argument("--reps", type=int, default=3, help="timed runs of each pipeline")
    p.add_argument("--device", default="cpu")
    p.add_argument("--weights", default=None, help="a weights file (default: seeded random, real layout)")
    p.add_argument("--batch-size", type=int, default=None, help="ours (default: 64 on CPU)")
    p.add_argument("--pfid-batch-size", type=int, default=50, help="pytorch-fid's (its CLI default: 50)")
    p.add_argument("--pfid-workers", type=int, default=None, help="pytorch-fid's DataLoader workers (default: as its CLI)")
    p.add_argument("--threads", type=int, default=None, help="torch threads for both (default: torch's)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    import pytorch_fid
    import pytorch_fid.inception as pfid_inception
    from pytorch_fid.fid_score import get_activations

    device = torch.device(args.device)
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    workers = min(cpus, 8) if args.pfid_workers is None else args.pfid_workers

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if args.weights:
            weights = Path(args.weights)
            state = torch.load(weights, map_location="cpu", weights_only=True)
        else:
            state = random_state_dict(seed=0)
            weights = tmp / "random_inception.pth"
            torch.save(state, weights)
        files = make_images(tmp / "images", args.n, args.size)

        with mock.patch.object(pfid_inception, "load_state_dict_from_url", lambda *a, **k: dict(state)):
            ref = pfid_inception.InceptionV3([3]).to(device).eval()
        ours = Extractor(weights, device, args.batch_size)

        def run_theirs(paths):
            with open(os.devnull, "w") as null, mock.patch("sys.stderr", null):  # its tqdm bar
                return get_activations(paths, ref, args.pfid_batch_size, 2048, device, workers)

        def run_ours(paths):
            return ours.extract(FolderReader(paths)).features

        warm = files[: min(len(files), 8)]
        run_theirs(warm)
        run_ours(warm)
        rates = {"pytorch-fid": [], "aigc": []}
        outputs = {}
        for _ in range(args.reps):
            for name, fn in (("aigc", run_ours), ("pytorch-fid", run_theirs)):
                t = time.perf_counter()
                outputs[name] = fn(files)
                rates[name].append(len(files) / (time.perf_counter() - t))

    theirs, mine = outputs["pytorch-fid"], outputs["aigc"]
    diff = float(np.abs(mine - theirs).max())
    result = {
        "images": args.n,
        "image_size": args.size,
        "device": str(device),
        "torch_threads": torch.get_num_threads(),
        "pytorch_fid_version": getattr(pytorch_fid, "__version__", "?"),
        "pytorch_fid_batch_size": args.pfid_batch_size,
        "pytorch_fid_workers": workers,
        "aigc_batch_size": ours.batch_size,
        "pytorch_fid_images_per_s": max(rates["pytorch-fid"]),
        "aigc_images_per_s": max(rates["aigc"]),
        "all_rates": rates,
        "speedup": max(rates["aigc"]) / max(rates["pytorch-fid"]),
        "max_abs_feature_diff": diff,
        "max_rel_feature_diff": diff / float(np.abs(theirs).max()),
        "machine": f"{platform.processor() or platform.machine()}, {cpus} CPUs",
        "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"{args.n} PNGs of {args.size}x{args.size}, {device}, torch threads {result['torch_threads']}")
        print(f"pytorch-fid {result['pytorch_fid_version']} (batch {args.pfid_batch_size}, {workers} workers): "
              f"{result['pytorch_fid_images_per_s']:.2f} images/s")
        print(f"aigc (batch {ours.batch_size}): {result['aigc_images_per_s']:.2f} images/s")
        print(f"speedup: {result['speedup']:.2f}x   max |feature difference|: {diff:.2e} "
              f"(relative {result['max_rel_feature_diff']:.1e})")


if __name__ == "__main__":
    main()
