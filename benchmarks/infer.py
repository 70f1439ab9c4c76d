"""`make bench-infer`: inference speed of the shipped model on this machine.

1. images/s through the model as it predicts (inference.predictive_model: the recipe's test-time shifts and
   the calibration temperature), batch 1 and batch 256, one thread and the default: PyTorch eager, the
   exported float ONNX graph on onnxruntime, and its int8 quantization (`digitrec export --quantize int8`),
   with the int8 model's accuracy on the test set next to the float one;
2. `digitrec predict DIR` as a whole process on a folder of 10,000 PNGs (MNIST test digits): decoding,
   preprocessing and the model (with the model's own test-time augmentation), images/s; last, the same digits
   as 56x56 PNGs, which are not in MNIST's form and so go through the whole preparation.

    python -m benchmarks.infer --data-dir data
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from benchmarks.common import machine

from digitrec.data.datasets import load_split
from digitrec.inference.backends import OnnxBackend, TorchBackend, bf16_in_hardware
from digitrec.inference.export import export, quantize_int8
from digitrec.inference.predict import default_model_path


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
    print(f"machine: {machine()}; load average before: {os.getloadavg()[0]:.2f}")
    fp32 = TorchBackend(args.model, precision="fp32")  # as `predict --precision fp32` runs it (BatchNorm folded)
    with tempfile.TemporaryDirectory() as tmp:
        onnx_path, int8_path = Path(tmp) / "model.onnx", Path(tmp) / "model.int8.onnx"
        export(args.model, "onnx", onnx_path, data_dir=None, log=lambda m: None)
        quantized = quantize_int8(onnx_path, int8_path, args.data_dir, log=lambda m: None)
        print(f"int8 accuracy on the test set: {quantized['int8_accuracy']:.2f}% "
              f"(float {quantized['float_accuracy']:.2f}%)")
        torch_fn, meta = fp32.logits, fp32.meta
        bf16 = TorchBackend(args.model, precision="bf16") if bf16_in_hardware(torch.device("cpu")) else None
        shifts = "with its test-time shifts" if meta.uses_tta else "no test-time shifts"
        print(f"| model `{meta.architecture}` ({shifts}), images/s | threads | batch 1 | batch 256 |\n"
              "|---|---|---|---|")
        default_threads = torch.get_num_threads()
        with torch.no_grad():
            for threads in (1, default_threads):  # the runs alternate, so a change in load hits all alike
                torch.set_num_threads(threads)
                for name, fn in (("PyTorch eager", torch_fn),
                                 *((("PyTorch eager, bf16", bf16.logits),) if bf16 else ()),
                                 ("onnxruntime float", OnnxBackend(onnx_path, threads=threads).logits),
                                 ("onnxruntime int8", OnnxBackend(int8_path, threads=threads).logits)):
                    one = rate(fn, np.random.rand(1, 1, 28, 28).astype(np.float32))
                    many = rate(fn, np.random.rand(256, 1, 28, 28).astype(np.float32))
                    print(f"| {name} | {threads} | {one:.0f} | {many:.0f} |", flush=True)
        torch.set_num_threads(default_threads)

        # MNIST's test digits as 28x28 PNGs (already in MNIST's form: taken as they are), and the same digits at
        # 56x56 (not in that form: every image goes through the whole preparation, as people's images do).
        folder, doubled = Path(tmp) / "pngs", Path(tmp) / "pngs-56"
        folder.mkdir()
        doubled.mkdir()
        test = load_split("mnist", args.data_dir, train=False)
        for i in range(args.images):
            digit = Image.fromarray(test.images[i % len(test)].numpy())
            digit.save(folder / f"{i:05d}.png")
            digit.resize((56, 56), Image.Resampling.BILINEAR).save(doubled / f"{i:05d}.png")
        labels = test.labels[np.arange(args.images) % len(test)].tolist()
        answers = {}  # run -> [(digit, verdict)] per image
        for name, model_args in (("shipped model, PyTorch, --precision auto", ["--model", args.model]),
                                 ("shipped model, PyTorch, fp32", ["--model", args.model, "--precision", "fp32"]),
                                 ("float ONNX, onnxruntime", ["--model", str(onnx_path), "--backend", "onnxruntime"]),
                                 ("int8 ONNX, onnxruntime", ["--model", str(int8_path), "--backend", "onnxruntime"]),
                                 ("56x56 PNGs, shipped model, --precision auto", ["--model", args.model])):
            if name.startswith("56x56"):
                folder = doubled
            start = time.perf_counter()
            result = subprocess.run([sys.executable, "-m", "digitrec", "predict", str(folder), "--format", "csv",
                                     *model_args], capture_output=True, text=True)
            seconds = time.perf_counter() - start
            rows = result.stdout.strip().splitlines()[1:]
            if len(rows) != args.images:  # a figure "% correct" only over every image asked for
                raise SystemExit(f"digitrec predict answered {len(rows)} of {args.images} images:\n"
                                 f"{result.stderr[-2000:]}")
            answers[name] = [tuple(row.split(",")[1:3]) for row in rows]  # path,digit,verdict,...
            right = sum(int(row.split(",")[1]) == label for row, label in zip(rows, labels) if row.split(",")[1])
            print(f"digitrec predict on a folder of {len(rows)} PNGs ({name}): {seconds:.1f} s whole process, "
                  f"{len(rows) / max(seconds, 1e-9):.0f} images/s, {100 * right / max(len(rows), 1):.2f}% correct",
                  flush=True)
        auto, fp32 = answers["shipped model, PyTorch, --precision auto"], answers["shipped model, PyTorch, fp32"]
        print(f"--precision auto against fp32, the same {len(auto)} PNGs: "
              f"{sum(a[0] != b[0] for a, b in zip(auto, fp32))} digits and "
              f"{sum(a[1] != b[1] for a, b in zip(auto, fp32))} verdicts differ")
        print(f"load average after: {os.getloadavg()[0]:.2f}")

if __name__ == "__main__":
    main()
