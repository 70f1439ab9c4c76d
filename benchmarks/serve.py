"""`make bench-serve`: a bounded load test of `digitrec serve` on loopback (the clients run on the same machine).

Two runs: one client sending REQUESTS predictions one after another, then CLIENTS concurrent clients.  The
image is a 446x336 PNG photo-like page (an MNIST test digit drawn on paper) or, with --mnist, 28x28 MNIST PNGs.
Prints errors, throughput, p50/p99 latency and the server's memory (with its decoding processes).

Two load generators, both on the same 2 cores as the server: this script's own asyncio httpx clients (50
different pages; Python, about 1.5 ms of CPU a request of their own), and, when it is installed (Debian's `hey`,
`make bench-serve` installs it as root), `hey`, a compiled load generator as people measure servers with (one
page, the first, sent again and again).  Both are printed, each with the CPU seconds per request of the server's
process, its preparing processes and the load generator; the lean one leaves the server the CPU that the Python
clients take.

    python -m benchmarks.serve --data-dir data --clients 16 --requests 200
    python -m benchmarks.serve --data-dir data --sheets --clients 4 --requests 50    # /v1/read, sheets

A/B on a shared machine: --variant NAME='SERVE OPTIONS' (repeatable) runs each variant in turn, --rounds times,
so that a change in the machine's load hits every variant alike:

    python -m benchmarks.serve --data-dir data --rounds 2 \
        --variant "before=--backend torch --model-threads 2" --variant "after="
"""

import argparse
import asyncio
import io
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx
from PIL import Image
from benchmarks.abuse import rss_by_process, tree_rss_mb
from benchmarks.common import machine

from digitrec.data.datasets import load_split


def page_image(digit, seed: int = 0) -> bytes:
    """An MNIST test digit drawn 220 px tall on 446x336 paper, as PNG (about 6-8 kB)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    ink = np.asarray(Image.fromarray(digit).resize((220, 220), Image.Resampling.BICUBIC), np.float32) / 255
    paper = np.full((336, 446), rng.uniform(0.85, 0.97), np.float32)
    top, left = int(rng.integers(20, 100)), int(rng.integers(20, 200))
    paper[top:top + 220, left:left + 220] *= 1 - 0.85 * ink
    buffer = io.BytesIO()
    Image.fromarray((paper * 255).astype(np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


def sheet_images(data_dir: str, n: int = 50) -> list[bytes]:
    """Sheets of five numbers (a date, a phone number and a decimal on two lines, a time and a plain number on a
    third) drawn from MNIST's validation digits (data.sheets), as `read` benchmarks them: /v1/read's requests."""
    import numpy as np

    from digitrec.data.datasets import split_validation
    from digitrec.data.sheets import by_class, draw_sheet

    validation = split_validation(load_split("mnist", data_dir, train=True), 5000)[1]
    bank = by_class(validation.images.numpy(), validation.labels.numpy())
    rng = np.random.default_rng(2027)
    digits = lambda k: "".join(str(d) for d in rng.integers(0, 10, k))  # noqa: E731
    return [draw_sheet([[f"{digits(2)}/{digits(2)}/{digits(4)}"],
                        [f"{digits(3)}-{digits(4)}", f"{digits(2)}.{digits(2)}"],
                        [f"{digits(2)}:{digits(2)}", digits(4)]], bank, rng) for _ in range(n)]


async def client(url: str, images: list[bytes], n: int, offset: int, latencies: list, errors: list, deadline: float,
                 path: str = "/v1/predict"):
    async with httpx.AsyncClient(base_url=url, timeout=60) as http:
        for i in range(n):
            if time.monotonic() > deadline:
                errors.append("deadline")
                return
            start = time.perf_counter()
            try:
                r = await http.post(path, content=images[(offset + i) % len(images)],
                                    headers={"Content-Type": "image/png"})
                if r.status_code != 200:
                    errors.append(r.status_code)
            except httpx.HTTPError as e:
                errors.append(type(e).__name__)
            latencies.append(time.perf_counter() - start)


def hey(url: str, image: bytes, clients: int, requests: int, path: str = "/v1/predict"
        ) -> tuple[int, int, float, float, float]:
    """(sent, errors, requests/s, p50 s, p99 s) of `hey` POSTing `image` to `path`."""
    import csv
    import tempfile

    with tempfile.NamedTemporaryFile(suffix=".png") as body:
        body.write(image)
        body.flush()
        out = subprocess.run(["hey", "-n", str(requests), "-c", str(clients), "-m", "POST", "-T", "image/png",
                              "-D", body.name, "-o", "csv", f"{url}{path}"],
                             capture_output=True, text=True, timeout=600).stdout
    rows = list(csv.DictReader(io.StringIO(out)))
    ok = [r for r in rows if r["status-code"] == "200"]
    latencies = [float(r["response-time"]) for r in ok]
    seconds = max((float(r["offset"]) + float(r["response-time"]) for r in rows), default=1e-9)
    q = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else [float("nan")] * 99
    return len(rows), requests - len(ok), len(rows) / seconds, q[49], q[98]


def cpu_seconds(pids) -> float:
    """User + system CPU seconds the processes `pids` have used so far."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
        except (OSError, IndexError, ValueError):
            continue
    return total / os.sysconf("SC_CLK_TCK")


class CpuPerRequest:
    """Where a run's CPU went, per request: the server's own process, its preparing processes, the load
    generator (this process for the httpx clients, the `hey` child for hey)."""

    def __init__(self, server_pid: int) -> None:
        self.server = server_pid
        self.workers = [p for p in rss_by_process(server_pid) if p != server_pid]
        self.start = self._now()

    def _now(self) -> tuple[float, float, float]:
        import resource

        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        return (cpu_seconds([self.server]), cpu_seconds(self.workers),
                time.process_time() + children.ru_utime + children.ru_stime)

    def line(self, requests: int) -> str:
        server, workers, client = (b - a for a, b in zip(self.start, self._now()))
        return (f"CPU per request: server process {1000 * server / requests:.2f} ms, its preparing processes "
                f"{1000 * workers / requests:.2f} ms, load generator {1000 * client / requests:.2f} ms")


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--data-dir", default="data")
    p.add_argument("--clients", type=int, default=32)
    p.add_argument("--requests", type=int, default=200)
    p.add_argument("--port", type=int, default=8765)
    p.add_argument("--mnist", action="store_true", help="send 28x28 MNIST PNGs instead of 446x336 pages")
    p.add_argument("--sheets", action="store_true", help="send sheets of five numbers to /v1/read instead")
    p.add_argument("--max-seconds", type=float, default=600, help="stop sending after this long")
    p.add_argument("--variant", action="append", default=[], metavar="NAME=OPTIONS",
                   help="a server configuration to compare (repeatable); default: the options after --")
    p.add_argument("--rounds", type=int, default=1, help="times each variant runs, alternating")
    p.add_argument("server_args", nargs="*", help="extra `digitrec serve` options, after --")
    args = p.parse_args()
    variants = [(v.partition("=")[0], shlex.split(v.partition("=")[2])) for v in args.variant] or \
        [("default", args.server_args)]
    test = load_split("mnist", args.data_dir, train=False)
    images = []
    for i in range(0 if args.sheets else 50 if not args.mnist else 500):
        buffer = io.BytesIO()
        Image.fromarray(test.images[i].numpy()).save(buffer, "PNG")
        images.append(buffer.getvalue() if args.mnist else page_image(test.images[i].numpy(), i))
    images = images or sheet_images(args.data_dir)
    print(f"machine: {machine()}; load average before: {os.getloadavg()[0]:.2f}")
    for round_ in range(args.rounds):
        for name, server_args in variants:
            print(f"-- {name} (round {round_ + 1}): digitrec serve {' '.join(server_args)}", flush=True)
            run(args, images, [*args.server_args, *server_args] if args.variant else server_args)
    print(f"load average after: {os.getloadavg()[0]:.2f}")


def run(args, images: list[bytes], server_args: list[str]) -> None:
    url = f"http://127.0.0.1:{args.port}"
    server = subprocess.Popen([sys.executable, "-m", "digitrec", "serve", "--port", str(args.port), "--log-level",
                               "warning", *server_args],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(600):
            try:
                if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        else:
            raise SystemExit("server did not start")
        path = "/v1/read" if args.sheets else "/v1/predict"
        for image in images[:20]:  # warm-up
            httpx.post(f"{url}{path}", content=image, headers={"Content-Type": "image/png"}, timeout=60)
        backend = httpx.get(f"{url}/v1/model").json()["backend"]
        kind = "28x28 MNIST PNGs" if args.mnist else "sheets of five numbers" if args.sheets else \
            f"{len(images[0])}-byte 446x336 PNG pages"
        for clients in (1, args.clients):
            before = tree_rss_mb(server.pid)
            latencies, errors = [], []
            deadline = time.monotonic() + args.max_seconds
            start = time.perf_counter()

            async def all_clients():
                await asyncio.gather(*(client(url, images, args.requests, c * 7, latencies, errors, deadline, path)
                                       for c in range(clients)))

            cpu = CpuPerRequest(server.pid)
            asyncio.run(all_clients())
            seconds = time.perf_counter() - start
            after = tree_rss_mb(server.pid)
            q = statistics.quantiles(latencies, n=100)
            print(f"httpx, {clients} client(s) x {args.requests} requests, {kind} ({backend}): {len(latencies)} sent, "
                  f"{len(errors)} errors {sorted(set(map(str, errors)))[:5]}, {len(latencies) / seconds:.0f} requests/s, "
                  f"p50 {1000 * q[49]:.1f} ms, p99 {1000 * q[98]:.1f} ms, server memory {before:.0f} -> {after:.0f} MB; "
                  f"{cpu.line(len(latencies))}", flush=True)
        if shutil.which("hey"):
            for clients in (1, args.clients):
                cpu = CpuPerRequest(server.pid)
                sent, failed, rate, p50, p99 = hey(url, images[0], clients, clients * args.requests, path)
                print(f"hey, {clients} client(s) x {args.requests} requests, one {kind[:-1]} ({backend}): {sent} sent, "
                      f"{failed} errors, {rate:.0f} requests/s, p50 {1000 * p50:.1f} ms, p99 {1000 * p99:.1f} ms; "
                      f"{cpu.line(sent)}", flush=True)
        else:
            print("hey is not installed (Debian: apt-get install hey): its figures are left out", flush=True)
    finally:
        server.terminate()
        server.wait(timeout=10)


if __name__ == "__main__":
    main()
