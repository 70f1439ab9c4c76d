"""The HTTP server as users meet it: a real `digitrec serve` process, real HTTP requests on 127.0.0.1."""

import base64
import dataclasses
import io
import os
import platform
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from conftest import run_cli
from PIL import Image
from test_predict import _png_header_only, png

from digitrec.inference.predict import default_model_path
from digitrec.serve.model import _installed, int8_may_saturate

MAX_BYTES = 1_000_000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(*args: str, env=None):
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "digitrec", "serve", "--port", str(port), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {proc.stdout.read()}")
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return proc, url
        except httpx.TransportError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("server did not become ready in 90 s")


@pytest.fixture(scope="module")
def server():
    proc, url = start_server("--max-bytes", str(MAX_BYTES), "--log-level", "warning")
    yield url, proc
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture(scope="module")
def digits(mnist_dir):
    """MNIST test digits as PNG files (white on black), with their labels."""
    from digitrec.data.datasets import load_split

    test = load_split("mnist", mnist_dir, train=False)
    return [(png(test.images[i].numpy()), int(test.labels[i])) for i in range(20)]


def test_health_ready_model_docs_and_page(server):
    url, _ = server
    assert httpx.get(f"{url}/healthz").json() == {"status": "ok"}
    assert httpx.get(f"{url}/readyz").json()["ready"] is True
    model = httpx.get(f"{url}/v1/model").json()
    # the shipped model is served as its int8 export on onnxruntime when that is installed (serve/model.py)
    assert model["backend"] == ("onnxruntime" if _installed("onnxruntime") else "torch")
    int8 = _installed("onnxruntime") and not int8_may_saturate()  # (float on x86 without VNNI)
    assert model["precision"] == ("int8" if int8 else "fp32")
    assert len(model["served_sha256"]) == 64 and model["served_sha256"] != model["sha256"]
    assert model["test_accuracy"] >= 99 and len(model["data_sha256"]) == 4
    assert model["name"] == "default" and len(model["sha256"]) == 64
    assert "/" not in str(model), "no file paths"
    assert httpx.get(f"{url}/docs").status_code == 200
    assert "/v1/predict/batch" in httpx.get(f"{url}/openapi.json").json()["paths"]
    page = httpx.get(f"{url}/")
    assert page.status_code == 200 and '<canvas id="canvas"' in page.text
    assert "http://" not in page.text and "https://" not in page.text  # self-contained: no CDN


@pytest.mark.mnist
def test_predict_raw_multipart_and_json_bodies(server, digits):
    url, _ = server
    data, label = digits[0]
    raw = httpx.post(f"{url}/v1/predict?include_image=true", content=data, headers={"Content-Type": "image/png"})
    assert raw.status_code == 200
    body = raw.json()
    assert body["digit"] == label and len(body["probabilities"]) == 10 and body["verdict"] == "digit"
    assert abs(sum(body["probabilities"]) - 1) < 1e-4 and body["uncertain"] is False
    assert Image.open(io.BytesIO(base64.b64decode(body["image"]))).size == (28, 28)
    form = httpx.post(f"{url}/v1/predict", files={"file": ("d.png", data, "image/png")}).json()
    as_json = httpx.post(f"{url}/v1/predict", json={"image": "data:image/png;base64," + base64.b64encode(data).decode()})
    assert form["digit"] == as_json.json()["digit"] == label and "image" not in form


@pytest.mark.mnist
def test_batch_gives_one_result_or_error_per_image(server, digits):
    url, _ = server
    files = [("files", (f"d{i}.png", d, "image/png")) for i, (d, _) in enumerate(digits[:5])]
    files.append(("files", ("bad.png", b"not an image", "image/png")))
    results = httpx.post(f"{url}/v1/predict/batch", files=files).json()["results"]
    assert [r.get("digit") for r in results[:5]] == [label for _, label in digits[:5]]
    assert results[5]["error"] == "unsupported_format" and results[5]["name"] == "bad.png"
    assert results[5]["verdict"] == "error" and results[0]["verdict"] in ("digit", "uncertain")


@pytest.mark.mnist
def test_read_a_line(server, mnist_dir):
    from synth import line

    from digitrec.data.datasets import load_split

    test = load_split("mnist", mnist_dir, train=False)
    image = line([test.images[i].numpy() for i in range(5)], np.random.default_rng(0))
    body = httpx.post(f"{url_of(server)}/v1/read", content=image, headers={"Content-Type": "image/png"}).json()
    assert body["text"] == "".join(str(int(d)) for d in test.labels[:5])
    assert len(body["digits"]) == 5 and all(len(d["box"]) == 4 for d in body["digits"])


def url_of(server):
    return server[0]


def _chunks(n_bytes: int, chunk: int = 64 * 1024):
    for _ in range(n_bytes // chunk + 1):
        yield b"\x00" * chunk


def _deep_json(depth: int) -> bytes:
    return b'{"image": ' + b"[" * depth + b"]" * depth + b"}"


def _truncated_jpeg() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8)).save(buffer, "JPEG")
    return buffer.getvalue()[:300]


HOSTILE = [  # (name, path, request keyword arguments)
    ("empty body", "/v1/predict", dict(content=b"", headers={"Content-Type": "image/png"})),
    ("truncated PNG", "/v1/predict", dict(content=png(np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8))[:900],
                                          headers={"Content-Type": "image/png"})),
    ("truncated JPEG", "/v1/predict", dict(content=_truncated_jpeg(), headers={"Content-Type": "image/jpeg"})),
    ("huge declared size", "/v1/predict", dict(content=_png_header_only(200_000, 200_000),
                                               headers={"Content-Type": "image/png"})),
    ("not an image", "/v1/predict", dict(content=b"%PDF-1.4 hello", headers={"Content-Type": "image/png"})),
    ("text content type", "/v1/predict", dict(content=b"7", headers={"Content-Type": "text/plain"})),
    ("no content type", "/v1/predict", dict(content=b"\x89PNG")),
    ("xml", "/v1/read", dict(content=b"<x/>", headers={"Content-Type": "application/xml"})),
    ("multipart without a file", "/v1/predict", dict(data={"note": "no file here"}, files={"other": ("x", b"y")})),
    ("multipart without boundary", "/v1/predict", dict(content=b"--x\r\n\r\n", headers={"Content-Type": "multipart/form-data"})),
    ("deeply nested JSON", "/v1/predict", dict(content=_deep_json(100_000), headers={"Content-Type": "application/json"})),
    ("oversized JSON", "/v1/predict/batch", dict(content=b'{"images": ["' + b"A" * (MAX_BYTES + 10) + b'"]}',
                                                 headers={"Content-Type": "application/json"})),
    ("JSON list", "/v1/predict", dict(json=[1, 2, 3])),
    ("JSON not base64", "/v1/predict", dict(json={"image": "***not base64***"})),
    ("JSON wrong type", "/v1/predict/batch", dict(json={"images": [1, {"a": []}]})),
    ("body over the limit", "/v1/predict", dict(content=b"\x00" * (MAX_BYTES + 1), headers={"Content-Type": "image/png"})),
    ("chunked body over the limit", "/v1/predict", dict(content=_chunks(MAX_BYTES + 1), headers={"Content-Type": "image/png"})),
    ("blank image", "/v1/predict", dict(content=png(np.full((64, 64), 255, np.uint8)), headers={"Content-Type": "image/png"})),
    ("blank line", "/v1/read", dict(content=png(np.zeros((40, 200), np.uint8)), headers={"Content-Type": "image/png"})),
    ("too many images", "/v1/predict/batch", dict(json={"images": [""] * 300})),
]


EXPECTED = {  # name -> (status, error code): 413 too big, 415 not a kind we take, 422 taken but unusable
    "empty body": (422, "empty_body"), "truncated PNG": (422, "invalid_image"), "truncated JPEG": (422, "invalid_image"),
    "huge declared size": (413, "too_large"), "not an image": (415, "unsupported_format"),
    "text content type": (415, "unsupported_media_type"), "no content type": (415, "unsupported_media_type"),
    "xml": (415, "unsupported_media_type"), "multipart without a file": (422, "missing_file"),
    "multipart without boundary": (422, "invalid_multipart"), "deeply nested JSON": (422, "invalid_json"),
    "oversized JSON": (413, "too_large"), "JSON list": (422, "invalid_json"), "JSON not base64": (422, "invalid_base64"),
    "JSON wrong type": (422, "invalid_json"), "body over the limit": (413, "too_large"),
    "chunked body over the limit": (413, "too_large"), "blank image": (422, "no_ink"), "blank line": (422, "no_ink"),
    "too many images": (413, "too_many_images"),
}


def test_hostile_inputs_get_4xx_json_and_the_server_stays_healthy(server, digits):
    url, proc = server
    with httpx.Client(base_url=url, timeout=30) as client:
        for name, path, kwargs in HOSTILE:
            response = client.post(path, **kwargs)
            assert 400 <= response.status_code < 500, (name, response.status_code, response.text[:200])
            body = response.json()
            assert (response.status_code, body["error"]) == EXPECTED[name], name
            assert {"error", "detail"} <= set(body) <= {"error", "detail", "verdict"} and body["detail"], name
        assert client.get("/v1/predict").status_code == 405
        assert client.post("/v1/predict", content=b"", headers={"Content-Type": "image/png"}).json()["error"] == "empty_body"
        assert client.post("/v1/predict", content=b"x" * (MAX_BYTES + 1),
                           headers={"Content-Type": "image/png"}).status_code == 413
        assert client.post("/v1/predict", content=HOSTILE[-3][2]["content"],
                           headers={"Content-Type": "image/png"}).json()["error"] == "no_ink"
        assert client.get("/healthz").status_code == 200
        ok = client.post("/v1/predict", content=digits[1][0], headers={"Content-Type": "image/png"})
        assert ok.status_code == 200 and ok.json()["digit"] == digits[1][1]
        metrics = client.get("/metrics").text
    assert proc.poll() is None
    assert 'digitrec_http_request_duration_seconds_count{method="POST",route="/v1/predict",status="413"}' in metrics
    assert 'digitrec_predictions_total{digit="none",verdict="no_ink"}' in metrics
    assert "digitrec_inference_seconds_bucket" in metrics and "digitrec_batch_size_bucket" in metrics


@pytest.mark.mnist
def test_concurrent_requests_are_all_answered_correctly(server, digits):
    import concurrent.futures

    url, _ = server

    def ask(item):
        data, label = item
        r = httpx.post(f"{url}/v1/predict", content=data, headers={"Content-Type": "image/png"}, timeout=60)
        return r.status_code, r.json().get("digit"), label

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(ask, digits * 3))
    assert all(status == 200 for status, _, _ in answers)
    assert [d for _, d, _ in answers] == [label for _, _, label in answers]  # each one right, in its own request
    assert httpx.get(f"{url}/healthz").status_code == 200


def test_request_ids_head_and_error_shapes(server):
    url, _ = server
    given = httpx.get(f"{url}/healthz", headers={"X-Request-ID": "abc-123"})
    assert given.headers["x-request-id"] == "abc-123"
    made = httpx.get(f"{url}/healthz").headers["x-request-id"]
    assert len(made) == 32 and made != httpx.get(f"{url}/healthz").headers["x-request-id"]
    assert httpx.head(f"{url}/healthz").status_code == 200 and httpx.head(f"{url}/readyz").status_code == 200
    assert httpx.get(f"{url}/nope").json() == {"error": "not_found", "detail": "Not Found"}
    assert httpx.delete(f"{url}/v1/predict").json()["error"] == "method_not_allowed"
    odd = httpx.request("BREW", f"{url}/healthz")
    # httptools' parser refuses a method it does not know (400) before the app: no metric label is made from it
    assert odd.status_code == 400 and 'method="BREW"' not in httpx.get(f"{url}/metrics").text


@pytest.mark.slow
def test_requests_beyond_the_request_threads_wait_then_get_503_never_a_hang():
    """One preparing worker (two request threads), and slow images enough to keep it busy for twice
    QUEUE_WAIT_S, with ordinary ones among them.  A request no thread took up within QUEUE_WAIT_S is answered
    503 with Retry-After (the server was busy), never 422 (that would blame the image): so the ordinary images
    get 200 or 503.  Nobody waits much past QUEUE_WAIT_S + the request budget; /healthz answers all along; the rejections
    are counted."""
    import concurrent.futures
    import math

    from benchmarks.abuse import palette_bomb
    from digitrec.serve.runner import REQUEST_BUDGET_S
    from digitrec.serve.sandbox import QUEUE_WAIT_S

    proc, url = start_server("--decode-workers", "1", "--max-concurrency", "1000", "--log-level", "warning")
    try:
        bomb, page = palette_bomb(), png(np.pad(np.full((20, 4), 255, np.uint8), 20))

        def post(image):
            start = time.monotonic()
            answer = httpx.post(f"{url}/v1/predict", content=image, timeout=30, headers={"Content-Type": "image/png"})
            return answer, time.monotonic() - start

        one_bomb = min(post(bomb)[1] for _ in range(3))  # what one slow image costs this machine
        images = [page if i % 4 == 3 else bomb for i in range(min(300, 4 * math.ceil(2 * QUEUE_WAIT_S / one_bomb)))]
        with concurrent.futures.ThreadPoolExecutor(len(images)) as clients:
            sent = [clients.submit(post, image) for image in images]
            assert httpx.get(f"{url}/healthz", timeout=2).status_code == 200
            answers = [f.result() for f in sent]
        statuses = [a.status_code for a, _ in answers]
        busy = [a for a, _ in answers if a.status_code == 503]
        assert busy and all(a.headers["retry-after"] == "1" and a.json()["error"] == "unavailable" for a in busy)
        assert {s for s, image in zip(statuses, images) if image is page} <= {200, 503}, statuses
        assert {s for s, image in zip(statuses, images) if image is bomb} <= {422, 503}, statuses
        # (the clients' own threads share the machine's 2 cores with the server: a few seconds of slack)
        assert max(seconds for _, seconds in answers) < QUEUE_WAIT_S + REQUEST_BUDGET_S + 3
        assert httpx.post(f"{url}/v1/predict", content=page, headers={"Content-Type": "image/png"}).status_code == 200
        rejected = re.search(r"^digitrec_http_requests_rejected_total (\S+)$", httpx.get(f"{url}/metrics").text, re.M)
        assert 1 <= float(rejected.group(1)) <= len(busy)  # (some 503s come from waiting for the worker itself)
    finally:
        proc.terminate()
        proc.wait(timeout=15)


def test_settings_from_environment_flags_win_and_max_concurrency(tmp_path):
    import concurrent.futures

    from benchmarks.abuse import palette_bomb

    env = {**os.environ, "DIGITREC_MAX_BYTES": "1000", "DIGITREC_MAX_CONCURRENCY": "1", "DIGITREC_LOG_FORMAT": "json"}
    proc, url = start_server("--max-bytes", "2000000", env=env)
    try:
        big = b"\x89PNG" + b"\x00" * 5000  # over 1,000 bytes (the environment), under 2,000,000 (the flag)
        assert httpx.post(f"{url}/v1/predict", content=big, headers={"Content-Type": "image/png"}).status_code != 413
        bomb = palette_bomb()  # takes the decoder a few hundred ms: requests overlap
        with concurrent.futures.ThreadPoolExecutor(6) as pool:
            answers = list(pool.map(lambda _: httpx.post(f"{url}/v1/predict", content=bomb, timeout=30,
                                                         headers={"Content-Type": "image/png"}), range(6)))
        busy = [a for a in answers if a.status_code == 503]
        assert busy and all(a.headers["retry-after"] == "1" and a.json()["error"] == "unavailable" for a in busy)
        assert all(a.status_code in (413, 422, 503) for a in answers)
        assert httpx.get(f"{url}/healthz").status_code == 200
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=15)
    assert f"digitrec serving on {url}/" in out
    assert any(line.startswith("{") and '"request_id"' in line for line in out.splitlines())


@pytest.mark.mnist
def test_two_workers_both_predict_and_metrics_add_up(digits):
    """--workers 2: requests land on both processes (their pids, from the JSON request log), every answer is
    right, and a scrape of either worker reports the sum of both."""
    import concurrent.futures
    import json
    import threading

    proc, url = start_server("--workers", "2", "--log-format", "json")
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)  # the log, as it comes
    reader.start()

    def served_by() -> set[int]:
        return {entry["pid"] for entry in map(json.loads, (l for l in list(lines) if l.startswith("{")))
                if entry.get("path") == "/v1/predict" and entry.get("status") == 200}

    sent = 0
    try:
        def ask(item):
            data, label = item
            r = httpx.post(f"{url}/v1/predict", content=data, headers={"Content-Type": "image/png"}, timeout=60)
            return r.status_code, r.json().get("digit"), label

        # /readyz answered once one worker was up; on a busy machine the second may still be loading its model,
        # so waves of requests go until both have answered (or a minute has passed).
        deadline = time.monotonic() + 60
        while True:
            with concurrent.futures.ThreadPoolExecutor(8) as pool:  # new connections, in parallel: both accept
                answers = list(pool.map(ask, digits * 2))
            sent += len(answers)
            assert [(status, d) for status, d, _ in answers] == [(200, label) for _, _, label in answers]
            time.sleep(0.5)  # (the log lines of the last answers)
            if len(served_by()) == 2 or time.monotonic() > deadline:
                break
        counts = set()
        for _ in range(6):  # each scrape lands on either worker; both must report the sum
            text = httpx.get(f"{url}/metrics").text
            line = next(l for l in text.splitlines()
                        if l.startswith('digitrec_http_request_duration_seconds_count{method="POST",route="/v1/predict"'))
            counts.add(float(line.split()[-1]))
        assert counts == {float(sent)}
    finally:
        proc.terminate()
        proc.wait(timeout=15)
        reader.join(timeout=15)
    assert len(served_by()) == 2, f"predictions came from {served_by()} only"


@pytest.mark.mnist
def test_json_batch_of_base64_images(server, digits):
    images = [base64.b64encode(d).decode() for d, _ in digits[:6]]
    images[2] = "data:image/png;base64," + images[2]  # a data URL, as canvas.toDataURL() makes
    r = httpx.post(f"{url_of(server)}/v1/predict/batch", json={"images": images}, timeout=60)
    assert r.status_code == 200
    results = r.json()["results"]
    assert [x["name"] for x in results] == [f"image{i}" for i in range(6)]
    assert [x["digit"] for x in results] == [label for _, label in digits[:6]]
    assert all(abs(sum(x["probabilities"]) - 1) < 1e-4 and x["verdict"] in ("digit", "uncertain") for x in results)


def _libraries(pid: int) -> set[str]:
    with open(f"/proc/{pid}/maps") as f:
        return {line.split()[-1].rsplit("/", 1)[-1] for line in f if "/" in line}


def _process_tree(pid: int) -> list[int]:
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [pid] + [p for c in children for p in _process_tree(int(c))]


@pytest.fixture(scope="module")
def onnx_model(tmp_path_factory):
    from digitrec.inference.export import export

    path = tmp_path_factory.mktemp("onnx") / "default.onnx"
    export(default_model_path(), "onnx", path, data_dir=None, log=lambda m: None)
    return path


@pytest.mark.mnist
def test_serving_on_onnxruntime_never_loads_torch(onnx_model, digits):
    proc, url = start_server("--model", str(onnx_model), "--backend", "onnxruntime")
    try:
        assert httpx.get(f"{url}/v1/model").json()["backend"] == "onnxruntime"
        for data, label in digits[:5]:
            r = httpx.post(f"{url}/v1/predict", content=data, headers={"Content-Type": "image/png"}, timeout=60)
            assert r.status_code == 200 and r.json()["digit"] == label
        line = base64.b64encode(digits[0][0]).decode()
        assert httpx.post(f"{url}/v1/predict/batch", json={"images": [line] * 3}).status_code == 200
        processes = _process_tree(proc.pid)  # the server, its decoding forkserver and workers
        loaded = set().union(*(_libraries(pid) for pid in processes))
        assert any(name.startswith("libonnxruntime") for name in loaded), "onnxruntime is what runs the model"
        assert not [name for name in loaded if "torch" in name], "no PyTorch library in any server process"
    finally:
        proc.terminate()
        proc.wait(timeout=15)


def test_an_x86_cpu_without_vnni_is_served_the_float_model(tmp_path, monkeypatch, caplog):
    """int8 products can saturate on x86 without VNNI (serve/model.py): the float model serves there."""
    from digitrec.serve import model as served_model

    assert served_model.int8_may_saturate("x86_64", {"sse4_2", "avx2", "avx512f"})
    assert not served_model.int8_may_saturate("x86_64", {"avx2", "avx_vnni"})
    assert not served_model.int8_may_saturate("x86_64", {"avx512f", "avx512_vnni"})
    assert not served_model.int8_may_saturate("aarch64", {"fp", "asimd"})  # not x86: not second-guessed
    if platform.system() == "Linux" and platform.machine() == "x86_64":  # this machine's own flags are read
        assert {"fpu", "sse2"} <= served_model.cpu_flags()
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))  # the float model's export goes here, not to ~/.cache
    monkeypatch.setattr(served_model, "cpu_flags", lambda: {"sse4_2", "avx2"})
    monkeypatch.setattr(served_model.platform, "machine", lambda: "x86_64")
    assert served_model.shipped_int8() is None and "no VNNI" in caplog.text
    predictor, _ = served_model.load(None, None)
    assert predictor.meta.quantized_from is None  # the float model, exported for onnxruntime or in PyTorch


def test_a_stale_int8_export_is_not_served(tmp_path, monkeypatch, caplog):
    """The shipped int8 file serves only the float weights it was made from (its `quantized_from` hash)."""
    import onnx

    from digitrec.inference.predict import default_int8_path
    from digitrec.meta import META_KEY, ModelMeta
    from digitrec.serve import model as served_model

    monkeypatch.setattr(served_model, "int8_may_saturate", lambda: False)  # (what this test is about on any CPU)
    assert served_model.shipped_int8().meta.quantized_from["file"] == "default.safetensors"
    graph = onnx.load(str(default_int8_path()))
    props = {p.key: p.value for p in graph.metadata_props}
    meta = ModelMeta.from_json(props[META_KEY], "int8")
    props[META_KEY] = dataclasses.replace(meta, quantized_from={"file": "default.safetensors", "sha256": "0" * 64}).to_json()
    onnx.helper.set_model_props(graph, props)
    onnx.save_model(graph, str(tmp_path / "stale.onnx"))
    monkeypatch.setattr(served_model, "default_int8_path", lambda: tmp_path / "stale.onnx")
    assert served_model.shipped_int8() is None and "was not made from default.safetensors" in caplog.text
    import torch

    threads = torch.get_num_threads()
    try:
        # asked for onnxruntime: the float model's ONNX export
        predictor, source = served_model.load(None, "onnxruntime")
        assert predictor.backend == "onnxruntime" and source == default_model_path()
        assert not predictor.meta.quantized_from
        monkeypatch.setattr(served_model, "cached_onnx", lambda source: None)  # (no export: PyTorch serves)
        predictor, source = served_model.load(None, None)
        assert predictor.backend == "torch" and source == default_model_path() and not predictor.meta.quantized_from
    finally:
        torch.set_num_threads(threads)  # (load sets the served model's thread count for this whole process)


def test_a_bad_model_file_stops_the_server_with_a_clear_message(tmp_path):
    (tmp_path / "m.safetensors").write_text("nope")
    result = subprocess.run([sys.executable, "-m", "digitrec", "serve", "--model", str(tmp_path / "m.safetensors"),
                             "--port", str(free_port())], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "not a digitrec model" in result.stderr

# The drawing page, in a real browser: tests/test_page.py.  (test_explain draws these strokes.)

CHROMIUM = "/usr/bin/chromium"
STROKES = {  # canvas coordinates (280 x 280 of the page's 448 x 280): mouse strokes a person might draw
    "1": [[(140, 50), (140, 230)]],
    "0": [[(140 + 60 * np.sin(t / 24 * 2 * np.pi), 140 - 90 * np.cos(t / 24 * 2 * np.pi)) for t in range(25)]],
    "7": [[(80, 60), (200, 60), (120, 230)]],
}


@pytest.mark.parametrize("module", ["fastapi", "httptools"])
def test_without_the_serve_extra_serve_says_how_to_get_it(module, tmp_path):
    blocked = tmp_path / "blocked" / module
    blocked.mkdir(parents=True)
    (blocked / "__init__.py").write_text(f"raise ModuleNotFoundError('not installed, for this test', name={module!r})\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path / "blocked"), *sys.path])}
    result = run_cli("serve", "--port", "1", env=env, cwd=tmp_path)
    assert result.returncode == 2 and result.stderr == \
        f"digitrec: error: {module} is not installed: pip install 'digitrec[serve]'\n"
