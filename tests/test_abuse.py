"""Issue 11: a real `digitrec serve` (default limits) against the attacker's probes of benchmarks/abuse.py.
Figures (time, memory, /healthz latency under 8 concurrent probes) are measured by `make bench-abuse`; here
each probe gets its expected 4xx (or 200 for a real image), never a 5xx, and the server stays healthy."""

import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from test_serve import start_server

from benchmarks.abuse import probes

PROBES = probes()


@pytest.fixture(scope="module")
def running():
    proc, url = start_server("--log-level", "warning")
    yield proc, url
    proc.terminate()
    proc.wait(timeout=15)


@pytest.fixture(scope="module")
def server(running):
    return running[1]


def rss_mb(pid: int) -> float:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


@pytest.mark.slow
@pytest.mark.parametrize("name, path, kwargs, expected", PROBES, ids=[p[0] for p in PROBES])
def test_probe_is_answered_without_5xx(server, name, path, kwargs, expected):
    start = time.monotonic()
    response = httpx.post(server + path, timeout=60, **kwargs)
    assert response.status_code in expected, (response.status_code, response.text[:300])
    assert time.monotonic() - start < 20  # a hang would be minutes; the 3 s target is bench-abuse's figure
    body = response.json()
    assert ("error" in body and "detail" in body) if response.status_code >= 400 else "verdict" in body
    assert httpx.get(server + "/healthz", timeout=5).status_code == 200


def test_real_digits_in_16_bit_and_float_images_are_read(server):
    for name, path, kwargs, _ in PROBES:
        if name.endswith("of a 1"):
            assert httpx.post(server + path, **kwargs).json()["digit"] == 1, name


def test_idle_and_slow_connections_are_closed_and_methods_do_not_grow_metrics(server):
    port = int(server.rsplit(":", 1)[1])
    results = {}

    def idle():
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.settimeout(30)
            start = time.monotonic()
            results["idle"] = (s.recv(1), time.monotonic() - start)

    def slow_upload():
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.settimeout(30)
            s.sendall(b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nContent-Length: 100000\r\n\r\n"
                      + b"\x89PNG")
            start, answer = time.monotonic(), s.recv(4096)
            seconds = time.monotonic() - start
            while b"}" not in answer and (more := s.recv(4096)):
                answer += more
            results["slow"] = (answer, seconds)

    threads = [threading.Thread(target=idle), threading.Thread(target=slow_upload)]
    for t in threads:
        t.start()
    # Made-up methods: refused by httptools' parser before the app (400), and no metric label made from any.
    statuses = {httpx.request("X" * 1000 + str(_), server + "/healthz").status_code for _ in range(50)}
    for t in threads:
        t.join()
    data, seconds = results["idle"]
    assert data == b"" and seconds < 12  # closed by the server
    answer, seconds = results["slow"]
    assert answer.startswith(b"HTTP/1.1 408") and b"request_timeout" in answer and seconds < 12
    metrics = httpx.get(server + "/metrics").text
    assert statuses == {400} and "XXXX" not in metrics


@pytest.mark.slow
def test_memory_of_a_burst_goes_back(running):
    """The issue's target as an outcome: after eight concurrent reads of 114 marks each, the server's process is
    back near where it was (it once stayed +205 MB: glibc arenas, now trimmed after a burst, and the analysis
    now runs in the preparing workers; the trimming itself is tested in test_memory.py)."""
    proc, url = running
    name, path, kwargs, _ = next(p for p in PROBES if p[0].startswith("114 bars"))
    assert httpx.post(url + path, timeout=60, **kwargs).status_code == 200  # warm: first-use allocations
    time.sleep(1.5)
    baseline = rss_mb(proc.pid)
    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(lambda _: httpx.post(url + path, timeout=60, **kwargs).status_code, range(8)))
    # On a loaded machine some may wait too long for a preparing worker (503) or their budget (422).
    assert set(statuses) <= {200, 422, 503} and statuses.count(200) >= 4, statuses
    deadline, grown = time.monotonic() + 5, None
    while time.monotonic() < deadline:
        time.sleep(0.5)
        grown = rss_mb(proc.pid) - baseline
        if grown < 80:
            break
    assert grown < 80, f"server RSS still +{grown:.0f} MB after the burst"


@pytest.mark.parametrize("head", [
    b"GET /healthz?" + b"a" * 20_000_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",  # a 20 MB request target
    b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"A: \r\n" * 20_000 + b"\r\n",  # 20,000 empty headers
])
def test_an_oversized_request_head_is_refused_and_the_connection_closed(server, head):
    port = int(server.rsplit(":", 1)[1])
    start = time.monotonic()
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.settimeout(10)
        try:
            s.sendall(head)
        except OSError:  # (the server may close before the rest is sent)
            pass
        answer = b""
        try:
            while chunk := s.recv(4096):
                answer += chunk
        except OSError:
            pass
    assert answer.startswith(b"HTTP/1.1 400") and time.monotonic() - start < 5
    assert httpx.get(server + "/healthz").status_code == 200
