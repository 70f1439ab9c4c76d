"""What the routers share, made once by the app factory (app.py) and kept in `app.state.server`; a route asks
for it with `Depends(server_state)`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastapi import Request

from digitrec.serve.config import Settings
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
