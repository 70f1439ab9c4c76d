"""The server's own state: /healthz (the process answers), /readyz (the model is loaded), /v1/model (what is
served) and /metrics (Prometheus)."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from fastapi.responses import Response

from digitrec.serve import metrics
from digitrec.serve.state import ServerState, server_state

router = APIRouter()


@router.api_route("/healthz", methods=["GET", "HEAD"])
async def healthz():
    return {"status": "ok"}


@router.api_route("/readyz", methods=["GET", "HEAD"])
async def readyz(state: ServerState = Depends(server_state)):
    return {"ready": True, "backend": state.predictor.backend}


@router.get("/v1/model")
async def model_info(state: ServerState = Depends(server_state)):
    """The model being served: name, content hash and metadata (no file paths)."""
    predictor, meta = state.predictor, state.predictor.meta
    return {"name": meta.name or predictor.source.stem, "sha256": state.model_sha256,
            "architecture": meta.architecture, "members": meta.members,
            "recipe": meta.recipe, "test_accuracy": meta.test_accuracy,
            "dataset": meta.dataset, "data_sha256": meta.data_sha256,
            "backend": predictor.backend, "precision": "int8" if meta.quantized_from else "fp32",
            "served_sha256": state.served_sha256}


@router.get("/metrics", include_in_schema=False)
async def prometheus():
    body, content_type = metrics.render()
    return Response(body, media_type=content_type)
