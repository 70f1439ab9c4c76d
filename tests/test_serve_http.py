"""The server's plumbing on its own: error answers and their statuses (from the code, never the message), body
parsing with its limits, what a record's error and verdict are, and the guard middleware (request IDs, the
bound on requests in flight, the last line of defence), with plain ASGI calls."""

import asyncio
import base64
import json

import pytest

pytest.importorskip("fastapi")

from digitrec.errors import CODES, http_status  # noqa: E402
from digitrec.inference.predict import NO_INK  # noqa: E402
from digitrec.serve.http import (  # noqa: E402
    MAX_BATCH,
    ApiError,
    error_response,
    image_body,
    parse_json,
    parse_multipart,
)
from digitrec.serve.middleware import GuardMiddleware  # noqa: E402
from digitrec.serve.records import record_error, verdict  # noqa: E402


def raised(call, *args) -> tuple[str, int]:
    with pytest.raises(ApiError) as e:
        call(*args)
    return e.value.code, e.value.status


# --- errors ------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("code", sorted(CODES))
def test_an_errors_status_comes_from_its_code(code):
    assert ApiError(code, "why").status == http_status(code) == CODES[code].http_status
    response = error_response(code, "why")
    assert response.status_code == CODES[code].http_status
    assert json.loads(response.body) == {"error": code, "detail": "why"}
    assert (response.headers.get("retry-after") == "1") == (CODES[code].http_status == 503)


def test_error_response_with_a_verdict_and_a_given_status():
    response = error_response("no_ink", "blank", verdict="no_ink")
    assert response.status_code == 422 and json.loads(response.body) == {"error": "no_ink", "detail": "blank",
                                                                         "verdict": "no_ink"}
    assert error_response("internal", "internal server error", 500).status_code == 500
    assert error_response("unavailable", "busy").headers["retry-after"] == "1"


# --- bodies ------------------------------------------------------------------------------------------------------

def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_parse_json_one_image_or_many():
    assert parse_json(json.dumps({"image": b64(b"abc")}).encode(), many=False) == [("image", b"abc")]
    assert parse_json(json.dumps({"image": "data:image/png;base64," + b64(b"abc")}).encode(), False) == \
        [("image", b"abc")]
    many = json.dumps({"images": [b64(b"a"), b64(b"b")]}).encode()
    assert parse_json(many, many=True) == [("image0", b"a"), ("image1", b"b")]
    assert raised(parse_json, many, False) == ("invalid_json", 422)  # one image expected: no "image" key
    full = json.dumps({"images": [b64(b"x")] * MAX_BATCH}).encode()
    assert parse_json(full, True)[-1] == (f"image{MAX_BATCH - 1}", b"x")


@pytest.mark.parametrize("body, many, expected", [
    (b"not json", False, ("invalid_json", 422)),
    (b"[1]", False, ("invalid_json", 422)),
    (b'{"other": 1}', True, ("invalid_json", 422)),
    (b'{"image": 7}', False, ("invalid_json", 422)),
    (b'{"image": "***"}', False, ("invalid_base64", 422)),
    (b'{"images": ' + json.dumps(["QQ=="] * (MAX_BATCH + 1)).encode() + b"}", True, ("too_many_images", 413)),
    (b"," * (2 * MAX_BATCH + 17), True, ("too_many_images", 413)),
    (b'{"image": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", False, ("invalid_json", 422)),
])
def test_parse_json_refusals(body, many, expected):
    assert raised(parse_json, body, many) == expected


def form(*parts: tuple[str, str | None, bytes], boundary: str = "XyZ") -> tuple[bytes, str]:
    body = b""
    for name, filename, data in parts:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename is not None else "")
        body += f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + data + b"\r\n"
    return body + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def test_parse_multipart_takes_the_file_parts():
    body, content_type = form(("note", None, b"hello"), ("file", "a.png", b"\x89PNG1"), ("files", "", b"two"))
    assert parse_multipart(body, content_type, many=True) == [("a.png", b"\x89PNG1"), ("file1", b"two")]
    assert raised(parse_multipart, *form(("note", None, b"x")), False) == ("missing_file", 422)
    assert raised(parse_multipart, body, "multipart/form-data", False) == ("invalid_multipart", 422)
    too_many = form(*[("files", f"{i}.png", b"x") for i in range(MAX_BATCH + 1)])
    assert raised(parse_multipart, *too_many, True) == ("too_many_images", 413)
    parts = form(*[("note", None, b"x") for _ in range(MAX_BATCH + 9)])
    assert raised(parse_multipart, *parts, True) == ("too_many_images", 413)


def test_the_openapi_image_body_names_the_three_ways():
    one, many = image_body(False)["requestBody"]["content"], image_body(True)["requestBody"]["content"]
    assert one["multipart/form-data"]["schema"]["required"] == ["file"]
    assert many["multipart/form-data"]["schema"]["required"] == ["files"]
    assert one["application/json"]["schema"]["required"] == ["image"]
    assert many["application/json"]["schema"]["properties"]["images"]["maxItems"] == MAX_BATCH


# --- records -----------------------------------------------------------------------------------------------------

def test_a_records_error_and_verdict_come_from_its_code_not_its_message():
    answered = {"path": "a", "digit": 3, "uncertain": False, "verdict": "digit", "error": None, "error_code": None}
    assert record_error(answered) is None and verdict(answered) == "digit"
    assert verdict({"path": "a", "error": None, "uncertain": True}) == "uncertain"
    assert verdict({"path": "a", "text": "12", "digits": [], "error": None}) == "digit"
    blank = {"path": "b", "text": "", "digits": [], "error": "nothing here", "error_code": "no_ink"}
    error = record_error(blank)
    assert (error.code, error.status, error.detail, error.verdict) == ("no_ink", 422, "nothing here", "no_ink")
    # the message of no_ink with another code: the code decides
    other = {"path": "c", "text": "", "digits": [], "error": NO_INK, "error_code": "too_costly"}
    assert (record_error(other).code, record_error(other).verdict) == ("too_costly", "error")
    big = {"path": "d", "error": "huge", "error_code": "too_large", "verdict": "error"}
    assert (record_error(big).status, record_error(big).verdict) == (413, "error")
    assert record_error({"path": "e", "error": "?"}).code == "invalid_image"


def test_a_typed_record_is_read_through_its_dict():
    from digitrec.errors import DigitrecError
    from digitrec.inference.records import Prediction, Reading

    blank = Reading.failed("t", DigitrecError("blank", code="no_ink")).to_dict()
    assert blank["path"] == "t" and record_error(blank).code == "no_ink" and verdict(blank) == "no_ink"
    bad = Prediction.failed("p", DigitrecError("not an image", code="invalid_image")).to_dict()
    assert (record_error(bad).code, record_error(bad).status, verdict(bad)) == ("invalid_image", 422, "error")


# --- the guard -----------------------------------------------------------------------------------------------------

def call(app, path="/v1/predict", method="POST", headers=()):
    """One HTTP request through an ASGI app: (status, headers, body)."""
    sent = []

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        sent.append(message)

    async def run():
        await app({"type": "http", "method": method, "path": path, "headers": list(headers)}, receive, send)

    return run(), sent


def answer(sent):
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], dict(start["headers"]), body


def test_the_guard_refuses_predictions_past_the_bound_and_lets_the_rest_through():
    async def scenario():
        release = asyncio.Event()

        async def slow(scope, receive, send):
            await release.wait()
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"ok"})

        guard = GuardMiddleware(slow, max_concurrency=1)
        first, first_sent = call(guard)
        task = asyncio.ensure_future(first)
        await asyncio.sleep(0.01)
        assert guard.in_flight == 1
        second, second_sent = call(guard)
        await second  # answered at once, while the first is in flight
        health, health_sent = call(guard, "/healthz", "GET")
        health_task = asyncio.ensure_future(health)  # not a prediction: not bounded
        release.set()
        await task
        await health_task
        assert guard.in_flight == 0
        return first_sent, second_sent, health_sent

    first, second, health = asyncio.run(scenario())
    assert answer(first)[0] == 200 and answer(health)[0] == 200
    status, headers, body = answer(second)
    assert status == 503 and headers[b"retry-after"] == b"1" and len(headers[b"x-request-id"]) == 32
    assert json.loads(body) == {"error": "unavailable", "detail": "over 1 requests in flight; try again"}


def test_the_guard_answers_an_unexpected_error_with_a_json_500_once():
    async def broken(scope, receive, send):
        raise RuntimeError("a bug")

    async def broken_late(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        raise RuntimeError("a bug after the answer started")

    run, sent = call(GuardMiddleware(broken, 4), headers=[(b"x-request-id", b"given-1")])
    asyncio.run(run)
    status, headers, body = answer(sent)
    assert (status, headers[b"x-request-id"]) == (500, b"given-1")
    assert json.loads(body) == {"error": "internal", "detail": "internal server error"}
    run, sent = call(GuardMiddleware(broken_late, 4))
    asyncio.run(run)
    assert [m["status"] for m in sent if m["type"] == "http.response.start"] == [200]


def test_the_guard_passes_other_scopes_through():
    seen = []

    async def inner(scope, receive, send):
        seen.append(scope["type"])

    asyncio.run(GuardMiddleware(inner, 1)({"type": "lifespan"}, None, None))
    assert seen == ["lifespan"]
