"""POST /v1/predict (one image -> one digit) and POST /v1/predict/batch (up to 256 images -> one result, or
one error, each).  The images are prepared in the sandbox and predicted on a request thread (runner.py); each
record of `inference.predict.predict_images` becomes its answer in one function per endpoint."""

from __future__ import annotations

import base64

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, Field

from digitrec.inference.predict import predict_images
from digitrec.serve import metrics
from digitrec.serve.http import ERRORS, image_body, images_from
from digitrec.serve.records import record_error, verdict
from digitrec.serve.runner import ServedPredictor
from digitrec.serve.state import ServerState, answering_predictor, server_state

router = APIRouter()


class Prediction(BaseModel):
    digit: int | None = Field(description="null when the verdict is not_a_digit")
    confidence: float
    uncertain: bool
    verdict: str = Field(description="digit, uncertain, not_a_digit")
    topk: list[tuple[int, float]]
    probabilities: list[float]
    image: str | None = Field(None, description="the 28x28 the model saw, base64 PNG (?include_image=true)")
    set: list[int] | None = Field(None, description="the digits that hold the true one with the coverage asked "
                                                     "(?sets=true), most probable first")


class BatchItem(BaseModel):
    name: str
    digit: int | None = None
    confidence: float | None = None
    uncertain: bool | None = None
    verdict: str
    topk: list[tuple[int, float]] | None = None
    probabilities: list[float] | None = None
    set: list[int] | None = None
    error: str | None = None
    detail: str | None = None


class BatchResult(BaseModel):
    results: list[BatchItem]


def _answer(record: dict, include_image: bool) -> dict:
    """A record with a prediction -> its answer (counted in the metrics)."""
    out = {k: record[k] for k in ("digit", "confidence", "uncertain")}
    out["verdict"] = verdict(record)
    out["topk"] = record["topk"][:3]
    # the records list every class (topk=10): the probabilities in class order come from them
    out["probabilities"] = [float(p) for p in (dict(record["topk"]).get(d, 0.0) for d in range(10))]
    if "set" in record:
        out["set"] = record["set"]
    if include_image and record.get("image") is not None:
        out["image"] = base64.b64encode(record["image"]).decode()
    metrics.count_prediction(out["digit"], out["verdict"])
    return out


def prediction_response(record, include_image: bool) -> dict:
    """/v1/predict: a record -> the answer, or its error raised (ApiError: status from its code)."""
    record = record.to_dict()
    error = record_error(record)
    if error:
        metrics.count_prediction(None, error.verdict)
        raise error
    return _answer(record, include_image)


def batch_item(record) -> dict:
    """/v1/predict/batch: a record -> its item in the results (an answer, or the error's code and detail)."""
    record = record.to_dict()
    error = record_error(record)
    if error:
        metrics.count_prediction(None, error.verdict)
        return {"name": record["path"], "digit": None, "confidence": None, "uncertain": None, "topk": None,
                "probabilities": None, "error": error.code, "detail": error.detail, "verdict": error.verdict}
    return {"name": record["path"], **_answer(record, False), "error": None, "detail": None}


def _predict(predictor: ServedPredictor, include_image: bool):
    """What a request thread runs once the images are prepared: the model, with every class in topk."""
    return lambda items: predict_images(items, predictor, topk=10, include_image=include_image)


@router.post("/v1/predict", response_model=Prediction, response_model_exclude_none=True, responses=ERRORS,
             openapi_extra=image_body(False))
async def predict(request: Request, include_image: bool = Query(False, description="add the 28x28 (base64 PNG)"),
                  state: ServerState = Depends(server_state),
                  predictor: ServedPredictor = Depends(answering_predictor)):
    """One image -> digit, confidence, the 10 probabilities, `uncertain`, `verdict` (and its `set`)."""
    items = (await images_from(request, state.settings.max_bytes, many=False))[:1]
    record, = await state.runner.run(request, items, then=_predict(predictor, include_image))
    return prediction_response(record, include_image)


# (exclude_unset: an item's `set` appears only when asked for; every other key is always set, null or not)
@router.post("/v1/predict/batch", response_model=BatchResult, response_model_exclude_unset=True, responses=ERRORS,
             openapi_extra=image_body(True))
async def predict_batch(request: Request, state: ServerState = Depends(server_state),
                        predictor: ServedPredictor = Depends(answering_predictor)):
    """Several images (at most 256) -> one result, or one error, per image."""
    items = await images_from(request, state.settings.max_bytes, many=True)
    records = await state.runner.run(request, items, then=_predict(predictor, False))
    return {"results": [batch_item(record) for record in records]}
