"""`make bench-serve`: a bounded load test of `digitrec serve` on loopback.

CLIENTS concurrent clients each send REQUESTS single-image predictions (MNIST test digits as PNG) one after
another; prints errors, throughput, p50/p99 latency and the server's memory before and after.

    python -m benchmarks.serve --data-dir data --clients 32 --requests 200
"""

import argparse
import asyncio
import io
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx
from PIL import Image

from digitrec.data import load_split

from .common import machine


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def client(url: str, images: list[bytes], n: int, offset: int, latencies: list, errors: list, deadline: float):
    async with httpx.AsyncClient(base_url=url, timeout=60) as http:
        for i in range(n):
            if time.monotonic() > deadline:
                errors.append("deadline")
                return
            start = time.perf_counter()
            try:
                r = await http.post("/v1/predict", content=images[(offset + i) % len(images)],
                                    headers={"Content-Type": "image/png"})
                if r.status_code != 200:
                    errors.append(r.status_code)
            except httpx.HTTPError as e:
                errors.append(type(e).__name__)
            latencies.append(time.perf_counter() - start)


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--data-dir", default="data")
    p.add_argument("--clients", type=int, default=32)
    p.add_argument("--requests", type=int, default=200)
    p.add_argument("--port", type=int, default=8765)
    p.add_argument("--max-seconds", type=float, default=600, help="stop sending after this long")
    p.add_argument("server_args", nargs="*", help="extra `digitrec serve` options, after --")
    args = p.parse_args()
    test = load_split("mnist", args.data_dir, train=False)
    images = []
    for i in range(500):
        buffer = io.BytesIO()
        Image.fromarray(test.images[i].numpy()).save(buffer, "PNG")
        images.append(buffer.getvalue())
    url = f"http://127.0.0.1:{args.port}"
    server = subprocess.Popen([sys.executable, "-m", "digitrec", "serve", "--port", str(args.port), *args.server_args],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(300):
            try:
                if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        else:
            raise SystemExit("server did not start")
        httpx.post(f"{url}/v1/predict", content=images[0], headers={"Content-Type": "image/png"})  # warm-up
        before = rss_mb(server.pid)
        latencies, errors = [], []
        deadline = time.monotonic() + args.max_seconds
        start = time.perf_counter()

        async def all_clients():
            await asyncio.gather(*(client(url, images, args.requests, c * 7, latencies, errors, deadline)
                                   for c in range(args.clients)))

        asyncio.run(all_clients())
        seconds = time.perf_counter() - start
        after = rss_mb(server.pid)
        backend = httpx.get(f"{url}/v1/model").json()["backend"]
    finally:
        server.terminate()
        server.wait(timeout=10)
    q = statistics.quantiles(latencies, n=100)
    print(f"machine: {machine()}")
    print(f"{args.clients} clients x {args.requests} requests ({backend}): {len(latencies)} sent, {len(errors)} errors "
          f"{sorted(set(map(str, errors)))[:5]}, {len(latencies) / seconds:.0f} requests/s, "
          f"p50 {1000 * q[49]:.0f} ms, p99 {1000 * q[98]:.0f} ms, server memory {before:.0f} -> {after:.0f} MB")


if __name__ == "__main__":
    main()
