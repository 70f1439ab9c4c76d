"""The server's routers in process: real requests through `create_app(...)` with FastAPI's TestClient (the
shipped model, the sandboxed preparing workers, the guard and error handlers, as `digitrec serve` runs them),
so that the routes' outcomes are checked where mutation testing reaches them.  tests/test_serve.py checks
the same server as a real process over HTTP."""

import base64
import io
import logging
import re

import numpy as np
import pytest
from PIL import Image
from test_predict import png

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from digitrec.serve.app import create_app  # noqa: E402
from digitrec.serve.config import Settings  # noqa: E402
from digitrec.serve.state import server_state  # noqa: E402

MAX_BYTES = 200_000
ORIGIN = "http://example.com"
PNG = {"Content-Type": "image/png"}
BLANK = png(np.full((64, 64), 255, np.uint8))
NOT_AN_IMAGE = b"%PDF-1.4 hello"


@pytest.fixture(scope="module")
def app():
    return create_app(Settings.resolve({"max_bytes": MAX_BYTES, "decode_workers": 1, "cors_origin": [ORIGIN]}))


@pytest.fixture(scope="module")
def client(app):
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c
    assert app.state.decode_pool is app.state.server.runner.pool


@pytest.fixture(scope="module")
def mnist_test(mnist_dir):
    from digitrec.data.datasets import load_split

    return load_split("mnist", mnist_dir, train=False)


@pytest.fixture(scope="module")
def digits(mnist_test):
    """MNIST test digits as PNG files (white on black), with their labels."""
    return [(png(mnist_test.images[i].numpy()), int(mnist_test.labels[i])) for i in range(6)]


def metric(client, line: str) -> float:
    """The value of one sample of /metrics (0 when it is not there yet)."""
    found = re.search("^" + re.escape(line) + r" (\S+)$", client.get("/metrics").text, re.M)
    return float(found.group(1)) if found else 0.0


def error_of(response) -> tuple[int, str, str | None]:
    body = response.json()
    assert set(body) <= {"error", "detail", "verdict"} and body["detail"], body
    return response.status_code, body["error"], body.get("verdict")


# --- predict.py ------------------------------------------------------------------------------------------------

@pytest.mark.mnist
def test_predict_reads_a_digit_sent_each_way(client, digits):
    data, label = digits[0]
    counted = f'digitrec_predictions_total{{digit="{label}",verdict="digit"}}'
    before = metric(client, counted)
    raw = client.post("/v1/predict?include_image=true", content=data, headers=PNG)
    assert raw.status_code == 200 and raw.headers["content-type"] == "application/json"
    body = raw.json()
    assert set(body) == {"digit", "confidence", "uncertain", "verdict", "topk", "probabilities", "image"}
    assert body["digit"] == label and body["verdict"] == "digit" and body["uncertain"] is False
    assert len(body["topk"]) == 3 and body["topk"][0] == [label, body["confidence"]]
    assert len(body["probabilities"]) == 10 and abs(sum(body["probabilities"]) - 1) < 1e-4
    assert body["probabilities"][label] == body["confidence"] > 0.9
    assert body["topk"][1][1] == body["probabilities"][body["topk"][1][0]]  # the probabilities in class order
    assert Image.open(io.BytesIO(base64.b64decode(body["image"]))).size == (28, 28)
    form = client.post("/v1/predict", files={"file": ("d.png", data, "image/png")}).json()
    as_json = client.post("/v1/predict", json={"image": "data:image/png;base64," + base64.b64encode(data).decode()})
    assert form["digit"] == as_json.json()["digit"] == label and "image" not in form
    assert metric(client, counted) == before + 3


@pytest.mark.parametrize("content, headers, expected", [
    (NOT_AN_IMAGE, PNG, (415, "unsupported_format", "error")),
    (png(np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8))[:900], PNG,
     (422, "invalid_image", "error")),
    (BLANK, PNG, (422, "no_ink", "no_ink")),
    (b"", PNG, (422, "empty_body", None)),
    (b"7", {"Content-Type": "text/plain"}, (415, "unsupported_media_type", None)),
    (b"\x89PNG", {}, (415, "unsupported_media_type", None)),
    (b"\x00" * (MAX_BYTES + 1), PNG, (413, "too_large", None)),
    (b"[1, 2]", {"Content-Type": "application/json"}, (422, "invalid_json", None)),
    (b'{"image": "***"}', {"Content-Type": "application/json"}, (422, "invalid_base64", None)),
    (b"--x\r\n\r\n", {"Content-Type": "multipart/form-data"}, (422, "invalid_multipart", None)),
], ids=["not an image", "truncated", "blank", "empty", "text", "no type", "too large", "json list", "not base64",
        "no boundary"])
def test_predict_refuses_what_it_cannot_read_with_the_code_and_its_status(client, content, headers, expected):
    response = client.post("/v1/predict", content=content, headers=headers)
    assert error_of(response) == expected
    assert "retry-after" not in response.headers and len(response.headers["x-request-id"]) == 32


def test_a_refused_image_is_counted_by_its_verdict(client):
    counted = 'digitrec_predictions_total{digit="none",verdict="no_ink"}'
    before = metric(client, counted)
    assert client.post("/v1/predict", content=BLANK, headers=PNG).status_code == 422
    assert metric(client, counted) == before + 1


def test_a_bad_query_parameter_is_invalid_request(client):
    response = client.post("/v1/predict?include_image=maybe", content=BLANK, headers=PNG)
    assert error_of(response)[:2] == (422, "invalid_request") and "include_image" in response.json()["detail"]


@pytest.mark.mnist
def test_sets_and_max_error_are_asked_in_the_query(client, digits):
    """?sets=true adds each answer's prediction set (predict, batch and read alike); ?max_error and ?coverage out
    of range are refused as invalid_request, naming the parameter; without them the answers have no set."""
    image, label = digits[0]
    plain = client.post("/v1/predict", content=image, headers=PNG).json()
    assert "set" not in plain
    asked = client.post("/v1/predict?sets=true&coverage=0.999&max_error=0.001", content=image, headers=PNG).json()
    assert asked["set"] == [label] and asked["digit"] == label
    files = [("files", (f"d{i}.png", d, "image/png")) for i, (d, _) in enumerate(digits[:3])]
    batch = client.post("/v1/predict/batch?sets=true", files=files).json()["results"]
    assert [r["set"] for r in batch] == [[y] for _, y in digits[:3]]
    read = client.post("/v1/read?sets=true", content=image, headers=PNG).json()
    assert read["digits"][0]["set"] == [label] and read["lines"][0]["numbers"][0]["digits"][0]["set"] == [label]
    assert "set" not in client.post("/v1/read", content=image, headers=PNG).json()["digits"][0]
    for query, name in (("sets=true&coverage=0.5", "coverage"), ("max_error=1.5", "max_error"),
                        ("max_error=-1", "max_error")):
        response = client.post(f"/v1/predict?{query}", content=image, headers=PNG)
        assert error_of(response)[:2] == (422, "invalid_request") and name in response.json()["detail"], query


@pytest.mark.mnist
def test_batch_gives_one_result_or_one_error_per_image(client, digits):
    images = digits
    files = [("files", (f"d{i}.png", d, "image/png")) for i, (d, _) in enumerate(images[:3])]
    files += [("files", ("bad.png", NOT_AN_IMAGE, "image/png")), ("files", ("blank.png", BLANK, "image/png"))]
    response = client.post("/v1/predict/batch", files=files)
    assert response.status_code == 200
    results = response.json()["results"]
    assert [r["name"] for r in results] == ["d0.png", "d1.png", "d2.png", "bad.png", "blank.png"]
    assert [r["digit"] for r in results] == [label for _, label in images[:3]] + [None, None]
    assert all(r["error"] is None and r["detail"] is None and len(r["probabilities"]) == 10 for r in results[:3])
    assert [(r["error"], r["verdict"]) for r in results[3:]] == [("unsupported_format", "error"), ("no_ink", "no_ink")]
    assert all(r["probabilities"] is None and r["detail"] for r in results[3:])
    as_json = client.post("/v1/predict/batch", json={"images": [base64.b64encode(d).decode() for d, _ in images[:2]]})
    assert [(r["name"], r["digit"]) for r in as_json.json()["results"]] == [
        ("image0", images[0][1]), ("image1", images[1][1])]
    one = client.post("/v1/predict/batch", json={"image": base64.b64encode(images[0][0]).decode()}).json()
    assert [r["name"] for r in one["results"]] == ["image"]


def test_batch_limits(client):
    assert error_of(client.post("/v1/predict/batch", json={"images": [""] * 300})) == (413, "too_many_images", None)
    assert error_of(client.post("/v1/predict/batch", json={"images": [1]})) == (422, "invalid_json", None)
    form = client.post("/v1/predict/batch", data={"note": "x"}, files={"other": ("x", b"y")})
    assert error_of(form) == (422, "missing_file", None) and "`files`" in form.json()["detail"]


# --- read.py ---------------------------------------------------------------------------------------------------

@pytest.mark.mnist
def test_read_a_sheet_of_two_lines_with_separators(client, mnist_test):
    """Through the sandbox: the sheet's plan (lines, numbers, separators) travels from the worker."""
    from digitrec.data.sheets import by_class, draw_sheet

    bank = by_class(mnist_test.images.numpy(), mnist_test.labels.numpy())
    sheets = [draw_sheet([["17"], ["4", "12.5"]], bank, np.random.default_rng(seed)) for seed in range(6)]
    bodies = [client.post("/v1/read", content=sheet, headers=PNG).json() for sheet in sheets]
    assert all(len(b["lines"]) == 2 and [len(line["numbers"]) for line in b["lines"]] == [1, 2] for b in bodies)
    assert sum(b["text"] == "17\n4  12.5" for b in bodies) >= 4, [b["text"] for b in bodies]
    assert all(b["digits"] == [d for line in b["lines"] for n in line["numbers"] for d in n["digits"]] for b in bodies)


def test_read_a_line_of_digits(client, mnist_test):
    from synth import line

    test = mnist_test
    image = line([test.images[i].numpy() for i in range(5)], np.random.default_rng(0))
    response = client.post("/v1/read", content=image, headers=PNG)
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"text", "digits", "lines", "verdict"} and body["verdict"] == "digit"
    assert body["text"] == "".join(str(int(d)) for d in test.labels[:5])
    assert [n["text"] for line in body["lines"] for n in line["numbers"]] == [body["text"]]
    assert [d["digit"] for d in body["digits"]] == [int(d) for d in test.labels[:5]]
    boxes = [d["box"] for d in body["digits"]]
    assert all(len(b) == 4 and b[0] < b[2] and b[1] < b[3] for b in boxes)
    assert [b[0] for b in boxes] == sorted(b[0] for b in boxes)  # left to right


def test_read_refuses_what_it_cannot_read(client):
    assert error_of(client.post("/v1/read", content=png(np.zeros((40, 200), np.uint8)), headers=PNG)) == \
        (422, "no_ink", "no_ink")
    assert error_of(client.post("/v1/read", content=NOT_AN_IMAGE, headers=PNG)) == \
        (415, "unsupported_format", "error")
    assert error_of(client.post("/v1/read", json={"images": []})) == (422, "invalid_json", None)
    assert error_of(client.post("/v1/read", content=b"<x/>", headers={"Content-Type": "application/xml"})) == \
        (415, "unsupported_media_type", None)


# --- explain.py ------------------------------------------------------------------------------------------------

@pytest.mark.mnist
def test_explain_a_digit(client, digits):
    pytest.importorskip("captum", reason="the learn extra")
    data, label = digits[0]
    body = client.post("/v1/explain", content=data, headers=PNG).json()
    assert set(body) == {"digit", "runner_up", "topk", "attributions", "overlay"}
    assert body["digit"] == label and body["runner_up"] != label and body["topk"][0][0] == label
    assert Image.open(io.BytesIO(base64.b64decode(body["overlay"]))).format == "PNG"
    overlay = client.post("/v1/explain?format=png", content=data, headers=PNG)
    assert overlay.headers["content-type"] == "image/png" and overlay.content == base64.b64decode(body["overlay"])
    assert error_of(client.post("/v1/explain", content=BLANK, headers=PNG)) == (422, "no_ink", None)
    assert error_of(client.post("/v1/explain?format=gif", content=data, headers=PNG))[:2] == (422, "invalid_request")


# --- status.py, page.py, the guard and the error handlers --------------------------------------------------------

def test_health_readiness_and_the_model(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.head("/healthz").status_code == 200 and client.head("/readyz").status_code == 200
    ready = client.get("/readyz").json()
    assert ready["ready"] is True and ready["backend"] in ("onnxruntime", "torch")
    model = client.get("/v1/model").json()
    assert model["name"] == "default" and model["backend"] == ready["backend"]
    assert len(model["sha256"]) == len(model["served_sha256"]) == 64 and model["test_accuracy"] >= 99
    assert model["precision"] in ("int8", "fp32") and (model["precision"] == "int8") == \
        (model["served_sha256"] != model["sha256"])
    assert "/" not in str(model), "no file paths"


def test_the_page_and_the_schema(client):
    page = client.get("/")
    assert page.status_code == 200 and '<canvas id="canvas"' in page.text
    schema = client.get("/openapi.json").json()
    assert set(schema["paths"]) == {"/healthz", "/readyz", "/v1/model", "/v1/predict", "/v1/predict/batch",
                                    "/v1/read", "/v1/explain"}
    body = schema["paths"]["/v1/predict/batch"]["post"]["requestBody"]["content"]
    assert set(body) == {"multipart/form-data", "image/png", "image/jpeg", "application/octet-stream",
                         "application/json"}
    assert body["application/json"]["schema"]["properties"]["images"]["maxItems"] == 256
    assert set(schema["paths"]["/v1/read"]["post"]["responses"]) == {"200", "408", "413", "415", "422", "503"}


def test_metrics_label_requests_by_route_and_status(client):
    client.get("/healthz")
    client.get("/no/such/page")
    text = client.get("/metrics").text
    assert 'digitrec_http_request_duration_seconds_count{method="GET",route="/healthz",status="200"}' in text
    assert 'digitrec_http_request_duration_seconds_count{method="GET",route="unmatched",status="404"}' in text
    assert client.get("/metrics").headers["content-type"].startswith("text/plain")


def test_request_ids_errors_and_cors(client):
    assert client.get("/healthz", headers={"X-Request-ID": "abc-123"}).headers["x-request-id"] == "abc-123"
    assert len(client.get("/healthz", headers={"X-Request-ID": "not an id"}).headers["x-request-id"]) == 32
    assert client.get("/nope").json() == {"error": "not_found", "detail": "Not Found"}
    assert client.get("/nope").status_code == 404
    assert error_of(client.delete("/v1/predict"))[:2] == (405, "method_not_allowed")
    simple = client.get("/healthz", headers={"Origin": ORIGIN})
    assert simple.headers["access-control-allow-origin"] == ORIGIN
    preflight = client.options("/v1/predict", headers={"Origin": ORIGIN, "Access-Control-Request-Method": "POST"})
    assert preflight.status_code == 200 and "x-request-id" in preflight.headers
    assert "access-control-allow-origin" not in client.get("/healthz", headers={"Origin": "http://other"}).headers


def test_an_unexpected_error_is_a_json_500_with_the_request_id_and_logged(app, client):
    def broken():
        raise RuntimeError("a bug")

    logged = []
    handler = logging.Handler()
    handler.emit = logged.append
    log = logging.getLogger("digitrec.serve")
    log.addHandler(handler)
    app.dependency_overrides[server_state] = broken
    try:
        response = client.get("/readyz", headers={"X-Request-ID": "req-1"})
    finally:
        app.dependency_overrides.clear()
        log.removeHandler(handler)
    assert response.status_code == 500 and response.headers["x-request-id"] == "req-1"
    assert response.json() == {"error": "internal", "detail": "internal server error"}
    assert "retry-after" not in response.headers
    errors = [r for r in logged if r.levelno == logging.ERROR]
    assert [r.getMessage() for r in errors] == ["unhandled error"] and errors[0].fields == {"request_id": "req-1"}
    assert errors[0].exc_info[0] is RuntimeError
    assert client.get("/readyz").status_code == 200


def test_read_gives_touching_digits_to_the_sequence_reader(app, client, mnist_test):
    """Through the sandbox: the strips of runs that may hold touching digits travel from the worker, and the
    server's reader (onnxruntime) reads them; without it they are cut."""
    from digitrec.data.sheets import make_numbers

    numbers = make_numbers(mnist_test.images.numpy(), mnist_test.labels.numpy(), 30, seed=5, kinds=("plain",),
                           overlap=3)
    state = app.state.server
    assert state.reader is not None

    def exact() -> float:
        bodies = [client.post("/v1/read", content=png, headers=PNG).json() for _, png in numbers]
        return float(np.mean([b["text"] == text for b, (text, _) in zip(bodies, numbers)]))

    with_reader = exact()
    reader, state.reader = state.reader, None
    try:
        cut = exact()
    finally:
        state.reader = reader
    assert with_reader >= 0.65 and with_reader >= cut + 0.1, (with_reader, cut)
