"""`make bench-abuse`: the attacker's probes of issue 11 against `digitrec serve` with default flags.

Every probe is built here, in memory (no binary files in the repository).  For each: the status, the time to
answer, the slowest `/healthz` seen while it ran, and the server's memory (RSS of the server and its decoding
processes together) before, at the peak and after.  Targets: every probe answered within 3 s, never a 5xx,
/healthz within 100 ms, 8 concurrent worst-case images raise RSS by at most 500 MB and it comes back to
within 200 MB of the baseline.

    python -m benchmarks.abuse [--port 8766]
"""

from __future__ import annotations

import argparse
import io
import socket
import struct
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

# --- the probe images ---------------------------------------------------------------------------------------

def _save(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


def scan_bomb(side: int = 6000, scans: int = 8000) -> bytes:
    """A progressive JPEG whose last scan is repeated thousands of times (each one a pass over the image)."""
    data = _save(Image.new("L", (side, side), 255), "JPEG", progressive=True, quality=50)
    last = data.rindex(b"\xff\xda")
    scan = data[last:-2]  # the last scan up to the EOI marker
    return data[:-2] + scan * scans + b"\xff\xd9"


def palette_bomb(width: int = 8000, height: int = 5000) -> bytes:
    """A 40-Mpx palette PNG with transparency: 36 kB that naive decoding expands to gigabytes."""
    image = Image.new("P", (width, height), 0)
    image.putpalette([255, 255, 255] * 256)
    return _save(image, "PNG", transparency=0)


def strip(length: int = 40_000_000) -> bytes:
    return _save(Image.new("L", (length, 1), 255), "PNG")


def bars(count: int = 114) -> bytes:
    """A line of `count` thin bars: a small file that asks /v1/read for many pieces."""
    image = np.full((60, count * 6 + 20), 255, np.uint8)
    for i in range(count):
        image[10:50, 10 + i * 6:12 + i * 6] = 0
    return _save(Image.fromarray(image), "PNG", optimize=True)


def digit_image(value_range: str) -> bytes:
    """A drawn '1' as a 16-bit PNG (full 16-bit range) or a float TIFF (values in [0, 1])."""
    ink = np.zeros((64, 64), np.float32)
    ink[10:54, 30:35] = 1.0
    paper = 1 - 0.9 * ink
    if value_range == "16-bit":
        return _save(Image.fromarray((paper * 65535).astype(np.uint16)), "PNG")
    return _save(Image.fromarray(paper.astype(np.float32), "F"), "TIFF")


def exif_mistyped() -> bytes:
    """A JPEG whose EXIF orientation tag (a SHORT) is declared RATIONAL, pointing at nonsense."""
    exif = Image.Exif()
    exif[0x0112] = 6
    raw = bytearray(exif.tobytes())
    entry = raw.index(b"\x01\x12\x00\x03")  # tag 0x0112, type SHORT (big-endian, as Pillow writes it)
    raw[entry + 2:entry + 4] = b"\x00\x05"
    image = Image.new("L", (64, 64), 255)
    image.paste(0, (30, 10, 34, 54))
    return _save(image, "JPEG", exif=bytes(raw))


def lab_tiff() -> bytes:
    image = Image.new("LAB", (64, 64), (255, 128, 128))  # L* stored over 0-255
    image.paste((0, 128, 128), (30, 10, 34, 54))
    return _save(image, "TIFF")


def tiff_rational_strips() -> bytes:
    """A TIFF whose StripOffsets (tag 273) is declared RATIONAL instead of LONG."""
    data = bytearray(_save(Image.new("L", (32, 32), 255), "TIFF"))
    order = "<" if data[:2] == b"II" else ">"
    ifd = struct.unpack(order + "I", data[4:8])[0]
    for i in range(struct.unpack(order + "H", data[ifd:ifd + 2])[0]):
        entry = ifd + 2 + 12 * i
        if struct.unpack(order + "H", data[entry:entry + 2])[0] == 273:
            data[entry + 2:entry + 4] = struct.pack(order + "H", 5)
    return bytes(data)


def eps() -> bytes:
    return b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 100 100\nshowpage\n"


def ico_with_big_png() -> bytes:
    """An ICO whose single entry is a 9400 x 9400 PNG."""
    png = _save(Image.new("L", (9400, 9400), 255), "PNG")
    header = struct.pack("<HHH", 0, 1, 1) + struct.pack("<BBBBHHII", 0, 0, 0, 0, 1, 32, len(png), 22)
    return header + png


def probes() -> list[tuple[str, str, dict, set[int]]]:
    """(name, path, httpx request keyword arguments, acceptable statuses)."""
    png = {"Content-Type": "image/png"}
    return [
        ("progressive JPEG, 8,000 scans", "/v1/predict", dict(content=scan_bomb(), headers={"Content-Type": "image/jpeg"}), {422}),
        ("40-Mpx palette PNG with transparency", "/v1/predict", dict(content=palette_bomb(), headers=png), {422, 413}),
        ("1 x 40,000,000 strip", "/v1/predict", dict(content=strip(), headers=png), {422, 413}),
        ("114 bars to /v1/read", "/v1/read", dict(content=bars(), headers=png), {200, 422}),
        ("5 MB JSON of empty strings", "/v1/predict/batch",
         dict(content=b'{"images": [' + b'"",' * 1_700_000 + b'""]}', headers={"Content-Type": "application/json"}),
         {413}),
        ("JPEG with a mistyped EXIF tag", "/v1/predict", dict(content=exif_mistyped(), headers={"Content-Type": "image/jpeg"}), {200}),
        ("LAB TIFF", "/v1/predict", dict(content=lab_tiff(), headers={"Content-Type": "image/tiff"}), {200}),
        ("TIFF with RATIONAL StripOffsets", "/v1/predict", dict(content=tiff_rational_strips(), headers={"Content-Type": "image/tiff"}), {422}),
        ("16-bit PNG of a 1", "/v1/predict", dict(content=digit_image("16-bit"), headers=png), {200}),
        ("float TIFF of a 1", "/v1/predict", dict(content=digit_image("float"), headers={"Content-Type": "image/tiff"}), {200}),
        ("EPS", "/v1/predict", dict(content=eps(), headers={"Content-Type": "image/x-eps"}), {415}),
        ("ICO holding a 9400^2 PNG", "/v1/predict", dict(content=ico_with_big_png(), headers={"Content-Type": "image/x-icon"}), {415}),
    ]


# --- measuring ------------------------------------------------------------------------------------------------

def rss_by_process(pid: int) -> dict[int, float]:
    """{pid: RSS in MB} of a process and all its descendants (the server, its decoding processes and their
    forkserver)."""
    found, stack = {}, [pid]
    while stack:
        p = stack.pop()
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    found[p] = int(line.split()[1]) / 1024
            for task in Path(f"/proc/{p}/task").iterdir():
                stack += [int(c) for c in (task / "children").read_text().split()]
        except (OSError, ValueError):
            continue
    return found


def tree_rss_mb(pid: int) -> float:
    return sum(rss_by_process(pid).values())


def rss_lines(pid: int) -> str:
    """One line per process of the tree: where the memory is."""
    def name(p):
        try:
            args = Path(f"/proc/{p}/cmdline").read_bytes().split(b"\0")
            return " ".join(a.decode(errors="replace") for a in args if a)[:70]
        except OSError:
            return "?"
    return "\n".join(f"  pid {p}: {mb:.0f} MB  {name(p)}" for p, mb in sorted(rss_by_process(pid).items()))


class HealthWatch:
    """Polls /healthz every 50 ms in a thread; the slowest answer (s) is `worst`."""

    def __init__(self, url: str) -> None:
        self.url, self.worst, self.failures, self.stop = url, 0.0, 0, threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self):
        with httpx.Client(timeout=10) as client:
            while not self.stop.is_set():
                start = time.perf_counter()
                try:
                    client.get(self.url + "/healthz")
                except httpx.HTTPError:
                    self.failures += 1
                self.worst = max(self.worst, time.perf_counter() - start)
                self.stop.wait(0.05)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()


def start_server(port: int, *args: str) -> subprocess.Popen:
    server = subprocess.Popen([sys.executable, "-m", "digitrec", "serve", "--port", str(port), "--log-level",
                               "warning", *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(300):
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                return server
        except httpx.TransportError:
            time.sleep(0.2)
    server.kill()
    raise SystemExit("server did not start")


def send(url: str, path: str, kwargs: dict) -> tuple[int, float]:
    start = time.perf_counter()
    try:
        status = httpx.post(url + path, timeout=60, **kwargs).status_code
    except httpx.HTTPError as e:
        status = type(e).__name__
    return status, time.perf_counter() - start


def idle_sockets(port: int, count: int) -> tuple[float, int]:
    """Open `count` connections that send nothing; (seconds until the server closed them all, how many it
    closed at once because they were over its bound)."""
    sockets = []
    for _ in range(count):
        s = socket.create_connection(("127.0.0.1", port))
        s.settimeout(20)
        sockets.append(s)
    start, closed_at_once = time.perf_counter(), 0
    for s in sockets:
        try:
            if s.recv(1) == b"":
                closed_at_once += time.perf_counter() - start < 1
        except (OSError, socket.timeout):
            pass
        s.close()
    return time.perf_counter() - start, closed_at_once


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--port", type=int, default=8766)
    p.add_argument("--concurrent", type=int, default=8, help="copies of each memory probe sent at once")
    args = p.parse_args()
    from benchmarks.common import machine

    url = f"http://127.0.0.1:{args.port}"
    server = start_server(args.port)
    fives = 0
    try:
        time.sleep(1)
        baseline = tree_rss_mb(server.pid)
        print(f"machine: {machine()}\nserver RSS at start (with decoding processes): {baseline:.0f} MB\n"
              f"{rss_lines(server.pid)}\n")
        print("| probe | status | answered in | slowest /healthz meanwhile | RSS peak over baseline |")
        print("|---|---|---|---|---|")
        for name, path, kwargs, expected in probes():
            concurrent = args.concurrent if name.startswith(("40-Mpx", "1 x", "progressive", "114")) else 1
            peak, stop = [baseline], threading.Event()

            def sample():
                while not stop.is_set():
                    peak[0] = max(peak[0], tree_rss_mb(server.pid))
                    stop.wait(0.02)

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            with HealthWatch(url) as health, ThreadPoolExecutor(concurrent) as pool:
                answers = list(pool.map(lambda _: send(url, path, kwargs), range(concurrent)))
            stop.set()
            sampler.join()
            statuses = sorted({a[0] for a in answers}, key=str)
            fives += sum(isinstance(s, int) and s >= 500 for s, _ in answers)
            ok = all(s in expected for s, _ in answers)
            print(f"| {name}{f' (x{concurrent} at once)' if concurrent > 1 else ''} | {statuses}{'' if ok else ' UNEXPECTED'} "
                  f"| {max(t for _, t in answers):.2f} s | {1000 * health.worst:.0f} ms | "
                  f"+{peak[0] - baseline:.0f} MB |", flush=True)
        methods = [httpx.request("X" * 50 + str(i), url + "/healthz").status_code for i in range(200)]
        metrics = httpx.get(url + "/metrics").text
        other = metrics.count('method="other"')
        print(f"| 200 random HTTP methods | {sorted(set(methods))} | | | /metrics is {len(metrics) / 1024:.0f} kB, "
              f"{other} lines with method=other |")
        head = httpx.head(url + "/healthz").status_code
        missing = httpx.get(url + "/nope").json()
        print(f"| HEAD /healthz, GET /nope | {head}, {missing} | | | |")
        with HealthWatch(url) as health:
            seconds, at_once = idle_sockets(args.port, 1030)
        print(f"| 1,030 idle connections | all closed after {seconds:.1f} s ({at_once} at once, over the bound) "
              f"| | {1000 * health.worst:.0f} ms | |")
        time.sleep(2)
        after = tree_rss_mb(server.pid)
        print(f"\nRSS after all probes: {after:.0f} MB ({after - baseline:+.0f} MB from the baseline); 5xx answers: {fives}\n"
              f"{rss_lines(server.pid)}")
    finally:
        server.terminate()
        server.wait(timeout=15)


if __name__ == "__main__":
    main()
