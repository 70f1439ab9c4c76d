"""Training throughput per recipe in fp32 and bf16 side by side (part of `make bench`), and the CPU flags that
decide what `--precision auto` picks.  Steps of each recipe's own model, batch size, optimizer and augmentation
on real MNIST batches; the first steps are warm-up.

    python -m benchmarks.precision [--data-dir data] [--steps 30] [--accuracy-seeds 5]

--accuracy-seeds N also trains the `fast` recipe N seeds in fp32 and in bf16 and prints the test accuracies
side by side: bf16 costs no accuracy when its seed mean lies within the fp32 seeds' spread.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from torch import nn

from benchmarks.common import machine
from digitrec.data.datasets import batches, load_split
from digitrec.inference.backends import autocast, bf16_in_hardware, resolve_precision
from digitrec.models import build_model
from digitrec.training.augment import random_affine
from digitrec.training.recipes import RECIPES
from digitrec.training.train import OPTIMIZERS

FLAGS = ("avx512f", "avx512_bf16", "amx_tile", "amx_bf16")


def cpu_flags() -> list[str]:
    try:
        line = next(l for l in Path("/proc/cpuinfo").read_text().splitlines() if l.startswith("flags"))
    except (OSError, StopIteration):
        return []
    return [f for f in FLAGS if f in line.split()]


def images_per_second(recipe, precision: str, split, steps: int, warmup: int = 5) -> float:
    torch.manual_seed(0)
    device = torch.device("cpu")
    net = build_model(recipe.model).to(memory_format=torch.channels_last)
    optimizer = OPTIMIZERS[recipe.optimizer](net.parameters(), recipe, True)
    criterion = nn.CrossEntropyLoss(label_smoothing=recipe.label_smoothing)
    data = batches(split, recipe.batch_size, torch.randperm(len(split))[:recipe.batch_size * (steps + warmup)])
    for step, (images, labels) in enumerate(data):
        if step == warmup:
            start = time.perf_counter()
        if recipe.augment.enabled:
            images = random_affine(images, recipe.augment)
        with autocast(device, precision):
            loss = criterion(net(images.contiguous(memory_format=torch.channels_last)).float(), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return steps * recipe.batch_size / (time.perf_counter() - start)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default="data")
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--accuracy-seeds", type=int, default=0)
    a = p.parse_args()
    cpu = torch.device("cpu")
    print(f"machine: {machine()}")
    print(f"CPU flags: {' '.join(cpu_flags()) or 'none of ' + ', '.join(FLAGS)}; oneDNN bf16 in hardware: "
          f"{bf16_in_hardware(cpu)} -> --precision auto trains in {resolve_precision('auto', cpu)} "
          f"(the seed recipe always fp32)")
    split = load_split("mnist", a.data_dir, train=True)
    print(f"\n{'recipe':8} {'model':6} {'batch':>5} {'fp32 images/s':>14} {'bf16 images/s':>14} {'bf16/fp32':>9}")
    for name, recipe in RECIPES.items():
        fp32 = images_per_second(recipe, "fp32", split, a.steps)
        bf16 = images_per_second(recipe, "bf16", split, a.steps) if bf16_in_hardware(cpu) else float("nan")
        print(f"{name:8} {recipe.model:6} {recipe.batch_size:5d} {fp32:14,.0f} {bf16:14,.0f} {bf16 / fp32:8.2f}x")
    if a.accuracy_seeds and bf16_in_hardware(cpu):
        import statistics

        from digitrec.training.train import train

        print(f"\nfast recipe, {a.accuracy_seeds} seeds, MNIST test accuracy (%):")
        for precision in ("fp32", "bf16"):
            accuracies = [train(RECIPES["fast"], data_dir=a.data_dir, seed=seed, device="cpu", precision=precision,
                                log=lambda line: None).test_accuracy for seed in range(a.accuracy_seeds)]
            print(f"  {precision}: {statistics.mean(accuracies):.2f} ± {statistics.stdev(accuracies):.2f}  "
                  f"({', '.join(f'{v:.2f}' for v in accuracies)})")


if __name__ == "__main__":
    main()
