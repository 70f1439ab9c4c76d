"""The JSON the CLI and the server give keeps its shape (keys and value types, recursively) across the package
move: tests/fixtures/shapes-before-the-move.json was written by the code of 7970e42 (before it) on the same
inputs.  The one change is the sheet reader's `lines` (read and /v1/read), an addition the reading issue asked
for; nothing was removed or retyped.  /v1/model shows the shipped model's metadata, which a newer model may add
to (recipe fields, the calibration's tables) but not take from."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from synth import line

BEFORE = json.loads((Path(__file__).parent / "fixtures" / "shapes-before-the-move.json").read_text())
ADDED = {"read": "lines", "http /v1/read": "lines"}
GROWS = {"http /v1/model"}  # every key before is there, of the same shape; new keys may come


def within(before, now) -> bool:
    """Whether `now` has every key of `before`, recursively, with the same shapes (and maybe more keys)."""
    if isinstance(before, dict):
        return isinstance(now, dict) and all(k in now and within(v, now[k]) for k, v in before.items())
    if isinstance(before, list):
        return isinstance(now, list) and (not before or not now or within(before[0], now[0]))
    return before == now


def shape(value):
    if isinstance(value, dict):
        return {k: shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [shape(value[0])] if value else []
    return {bool: "bool", int: "number", float: "number", str: "string", type(None): "null"}[type(value)]


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def mnist_test(mnist_dir):
    from digitrec.data.datasets import load_split

    return load_split("mnist", mnist_dir, train=False)


@pytest.fixture(scope="module")
def shapes(mnist_test):
    from fastapi.testclient import TestClient

    from digitrec.inference.predict import Predictor, predict_images, read_images
    from digitrec.serve.app import create_app
    from digitrec.serve.config import Settings

    digit = _png((255 - mnist_test.images[0].numpy()).repeat(3, 0).repeat(3, 1))
    line_png = line([mnist_test.images[i].numpy() for i in range(4)], np.random.default_rng(0))
    predictor = Predictor()
    now = {"predict": shape(predict_images([("d.png", digit)], predictor)[0].to_dict()),
           "predict-error": shape(predict_images([("bad.png", b"not an image")], predictor)[0].to_dict()),
           "read": shape(read_images([("l.png", line_png)], predictor)[0].to_dict())}
    png = {"Content-Type": "image/png"}
    with TestClient(create_app(Settings.resolve({}))) as client:
        now["http /v1/predict"] = shape(client.post("/v1/predict", content=digit, headers=png).json())
        now["http /v1/read"] = shape(client.post("/v1/read", content=line_png, headers=png).json())
        now["http /v1/model"] = shape(client.get("/v1/model").json())
        now["http /healthz"] = shape(client.get("/healthz").json())
        now["http error"] = shape(client.post("/v1/predict", content=b"not an image", headers=png).json())
    return now


@pytest.mark.mnist
@pytest.mark.parametrize("output", sorted(BEFORE))
def test_the_json_keeps_its_shape(shapes, output):
    now = dict(shapes[output])
    if output in ADDED:
        assert ADDED[output] in now  # the addition is there ...
        del now[ADDED[output]]  # ... and the rest is as it was
    if output in GROWS:
        assert within(BEFORE[output], now), now
    else:
        assert now == BEFORE[output]
