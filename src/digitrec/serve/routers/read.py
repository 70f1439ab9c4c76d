"""POST /v1/read: a line of digits -> the string, each digit's confidence, verdict and box.  The image is
prepared (and cut into digits) in the sandbox; the record of `inference.predict.read_images` becomes the
answer in `read_response`."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel

from digitrec.errors import DigitrecError
from digitrec.inference.predict import read_images
from digitrec.serve.http import ERRORS, ApiError, image_body, images_from
from digitrec.serve.records import as_dict, record_error, verdict
from digitrec.serve.state import ServerState, server_state

router = APIRouter()


class ReadDigit(BaseModel):
    digit: int | None
    confidence: float
    box: list[int]
    verdict: str | None = None


class ReadResult(BaseModel):
    text: str
    digits: list[ReadDigit]
    verdict: str


def read_response(record) -> dict:
    """A read record -> the answer, or its error raised (ApiError: status from its code)."""
    record = as_dict(record)
    error = record_error(record)
    if error:
        raise error
    return {"text": record["text"], "digits": record["digits"], "verdict": verdict(record)}


@router.post("/v1/read", response_model=ReadResult, responses=ERRORS, openapi_extra=image_body(False))
async def read(request: Request, state: ServerState = Depends(server_state)):
    """A line of digits -> the string, per-digit confidences and boxes."""
    items = (await images_from(request, state.settings.max_bytes, many=False))[:1]
    try:
        record, = await state.runner.run(request, items, line=True,
                                         then=lambda prepared: read_images(prepared, state.predictor))
    except DigitrecError as e:  # a refusal from the analysis (e.g. too_costly), answered like the others
        raise ApiError(e.code, str(e)) from None
    return read_response(record)
