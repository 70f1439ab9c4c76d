"""`make bench-infer`: inference speed of the shipped model on this machine.

1. images/s through the network alone, batch 1 and batch 256: PyTorch eager vs onnxruntime (same weights;
   the exported graph has no test-time augmentation, so neither side uses it here);
2. `digitrec predict DIR` as a whole process on a folder of 10,000 PNGs (MNIST test digits): decoding,
   preprocessing and the model (with the model's own test-time augmentation), images/s.

    python -m benchmarks.infer --data-dir data
"""

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from digitrec.checkpoint import load_model
from digitrec.data import load_split
from digitrec.export import export
from digitrec.inference import OnnxBackend
from digitrec.predict import default_model_path

from .common import machine


def rate(fn, x, seconds: float = 3.0) -> float:
    fn(x)  # warm-up
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        fn(x)
        n += len(x)
    return n / (time.perf_counter() - start)


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--data-dir", default="data")
    p.add_argument("--model", default=str(default_model_path()))
    p.add_argument("--images", type=int, default=10_000)
    args = p.parse_args()
    print(f"machine: {machine()}")
    model, meta = load_model(args.model)
    with tempfile.TemporaryDirectory() as tmp:
        onnx_path = Path(tmp) / "model.onnx"
        export(args.model, "onnx", onnx_path, data_dir=None, log=lambda m: None)
        session = OnnxBackend(onnx_path)
        torch_fn = lambda x: model(torch.from_numpy(x))
        print(f"| model `{meta['architecture']}` | batch 1 | batch 256 |\n|---|---|---|")
        with torch.no_grad():
            for name, fn in (("PyTorch eager", torch_fn), ("onnxruntime", session.logits)):
                one = rate(fn, np.random.rand(1, 1, 28, 28).astype(np.float32))
                many = rate(fn, np.random.rand(256, 1, 28, 28).astype(np.float32))
                print(f"| {name}, images/s | {one:.0f} | {many:.0f} |", flush=True)

        folder = Path(tmp) / "pngs"
        folder.mkdir()
        test = load_split("mnist", args.data_dir, train=False)
        for i in range(args.images):
            Image.fromarray(test.images[i % len(test)].numpy()).save(folder / f"{i:05d}.png")
        start = time.perf_counter()
        result = subprocess.run([sys.executable, "-m", "digitrec", "predict", str(folder), "--format", "csv",
                                 "--model", args.model], capture_output=True, text=True)
        seconds = time.perf_counter() - start
        rows = result.stdout.strip().splitlines()[1:]
        if len(rows) != args.images:  # a figure "% correct" only over every image asked for
            raise SystemExit(f"digitrec predict answered {len(rows)} of {args.images} images:\n{result.stderr[-2000:]}")
        labels = test.labels[np.arange(args.images) % len(test)].tolist()
        right = sum(int(row.split(",")[1]) == label for row, label in zip(rows, labels) if row.split(",")[1])
        print(f"digitrec predict on a folder of {len(rows)} PNGs: {seconds:.1f} s whole process, "
              f"{len(rows) / seconds:.0f} images/s, {100 * right / len(rows):.2f}% correct")


if __name__ == "__main__":
    main()
