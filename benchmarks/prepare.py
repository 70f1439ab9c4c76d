"""Where one request's time goes (part of `make bench-serve`): preparing an image stage by stage in this process,
the same through the server's sandboxed workers, and the served model on the 28x28 result.  Two images: the
446x336 PNG page of `benchmarks/serve.py` and a 28x28 MNIST PNG (what `digitrec predict` reads in bulk).
Each figure is the median of 200 runs after 20 warm-up runs, in ms of one core.

    python -m benchmarks.prepare --data-dir data
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import time

from PIL import Image

from benchmarks.common import machine
from benchmarks.serve import page_image
from digitrec.data.datasets import load_split
from digitrec.imaging.decode import decode
from digitrec.imaging.ink import find_ink, to_mnist
from digitrec.imaging.prepare import prepare


def median_ms(fn, runs: int = 200, warmup: int = 20) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default="data")
    a = p.parse_args()
    from digitrec.serve import model as served_model
    from digitrec.serve.sandbox import DecodePool

    digit = load_split("mnist", a.data_dir, train=False).images[0].numpy()
    small = io.BytesIO()
    Image.fromarray(digit).save(small, "PNG")
    images = {"446x336 page": page_image(digit), "28x28 MNIST PNG": small.getvalue()}
    predictor, _ = served_model.load(None, None, threads=1)  # the model as `digitrec serve` runs it
    pool = DecodePool(workers=1)
    print(f"machine: {machine()}; load average before: {os.getloadavg()[0]:.2f}; model on {predictor.backend}, "
          "one thread")
    print("| image | decode | find_ink | to_mnist | prepare, in-process | prepare, through a worker | model |\n"
          "|---|---:|---:|---:|---:|---:|---:|")
    try:
        for name, data in images.items():
            grey = decode(data)[0]
            ink = find_ink(grey)
            ready = prepare(data).digits
            row = [median_ms(lambda: decode(data)), median_ms(lambda: find_ink(grey)),
                   median_ms(lambda: to_mnist(ink)), median_ms(lambda: prepare(data)),
                   median_ms(lambda: pool.prepare(data)), median_ms(lambda: predictor.probabilities(list(ready)))]
            print(f"| {name} | " + " | ".join(f"{ms:.2f} ms" for ms in row) + " |", flush=True)
    finally:
        pool.close()


if __name__ == "__main__":
    main()
