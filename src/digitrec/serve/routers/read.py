"""POST /v1/read: a sheet of numbers -> its text (lines joined by newlines, numbers by two spaces, separators
kept), its lines -> numbers -> digits with confidences, verdicts and boxes, and the flat list of every digit.
The image is prepared (laid out and cut into digits) in the sandbox; the record of
`inference.predict.read_images` becomes the answer in `read_response`."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field

from digitrec.errors import DigitrecError
from digitrec.inference.predict import read_images
from digitrec.serve.http import ERRORS, ApiError, image_body, images_from
from digitrec.serve.records import record_error, verdict
from digitrec.serve.runner import ServedPredictor
from digitrec.serve.state import ServerState, answering_predictor, server_state

router = APIRouter()


class ReadDigit(BaseModel):
    digit: int | None
    confidence: float
    box: list[int]
    verdict: str | None = None
    set: list[int] | None = Field(None, description="the digits that hold the true one with the coverage asked "
                                                     "(?sets=true); none for digits the sequence reader read")


class ReadNumber(BaseModel):
    text: str = Field(description="digits, separators (- / . : ,) and ? for a mark that is not a digit")
    box: list[int]
    confidence: float = Field(description="the chance that every digit is read right (product of the digits')")
    verdict: str = Field(description="read, uncertain or not_a_number")
    digits: list[ReadDigit]


class ReadLine(BaseModel):
    text: str = Field(description="the line's numbers joined by two spaces")
    box: list[int]
    confidence: float
    numbers: list[ReadNumber]


class ReadResult(BaseModel):
    text: str = Field(description="the lines joined by newlines")
    digits: list[ReadDigit] = Field(description="every digit of the image in reading order")
    lines: list[ReadLine]
    verdict: str


def read_response(record) -> dict:
    """A read record -> the answer, or its error raised (ApiError: status from its code)."""
    record = record.to_dict()
    error = record_error(record)
    if error:
        raise error
    return {"text": record["text"], "digits": record["digits"], "lines": record["lines"], "verdict": verdict(record)}


@router.post("/v1/read", response_model=ReadResult, response_model_exclude_unset=True, responses=ERRORS,
             openapi_extra=image_body(False))
async def read(request: Request, state: ServerState = Depends(server_state),
               predictor: ServedPredictor = Depends(answering_predictor)):
    """A sheet of numbers -> its text, lines, numbers and digits with confidences and boxes."""
    items = (await images_from(request, state.settings.max_bytes, many=False))[:1]
    try:
        record, = await state.runner.run(request, items, line=True,
                                         then=lambda prepared: read_images(prepared, predictor, reader=state.reader))
    except DigitrecError as e:  # a refusal from the analysis (e.g. too_costly), answered like the others
        raise ApiError(e.code, str(e)) from None
    return read_response(record)
