"""What the routers share, made once by the app factory (app.py) and kept in `app.state.server`; a route asks
for it with `Depends(server_state)`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastapi import Query, Request

from digitrec.errors import DigitrecError
from digitrec.inference.calibration import CONFORMAL_COVERAGE, DEFAULT_COVERAGE
from digitrec.serve.config import Settings
from digitrec.serve.http import ApiError
from digitrec.serve.runner import Runner, ServedPredictor


@dataclass
class ServerState:
    settings: Settings
    predictor: ServedPredictor
    runner: Runner
    model_sha256: str  # the model file people named (the shipped float file when none)
    served_sha256: str  # the file that runs (its int8 export, an ONNX export of it, or itself)
    network: Any = None  # the PyTorch network /v1/explain takes gradients of (None: no /v1/explain)
    reader: Any = None  # the sequence reader /v1/read gives touching digits to (None: they are cut)


def server_state(request: Request) -> ServerState:
    return request.app.state.server


def answering_predictor(request: Request,
                        max_error: float | None = Query(None, description=(
                            "flag as uncertain the answers under the confidence that keeps at most this share of "
                            "the validation digits' answers wrong (0.001: one in a thousand)")),
                        sets: bool = Query(False, description="add each digit's prediction set"),
                        coverage: float | None = Query(None, description=(
                            f"the sets' coverage, {CONFORMAL_COVERAGE[0]}-{CONFORMAL_COVERAGE[1]} (default "
                            f"{DEFAULT_COVERAGE}; implies sets=true)"))) -> ServedPredictor:
    """The served predictor, answering as the request's query asks (inference.Predictor.answering); the
    ranges are checked there, as for the CLI."""
    try:
        return server_state(request).predictor.answering(max_error, coverage, sets)
    except DigitrecError as e:  # a value out of range names its parameter: the server's own invalid_request
        raise ApiError("invalid_request" if e.param else e.code, str(e)) from None
