"""POST /v1/explain: why the model says what it says, for one image (the drawing page's "Explain" toggle).

The image goes through the same preprocessing as /v1/predict; the answer is the attribution overlay of
`digitrec.analysis.explain` (Integrated Gradients, for the predicted digit and the runner-up) as a PNG
(`?format=png`), or JSON with the digit, top 3, both 28x28 maps and the overlay as base64 PNG (default).
Needs the `learn` extra (captum) and the PyTorch network of the served model (`load_network`, called by the
app factory, which includes this router only for a model that has one: an ONNX model served on onnxruntime
never imports torch); errors come in the usual `{"error", "detail"}` form."""

from __future__ import annotations

import base64

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response

from digitrec.analysis.explain import explain_image, overlay_png
from digitrec.errors import DigitrecError
from digitrec.imaging.prepare import Prepared, prepare
from digitrec.inference.predict import NO_INK
from digitrec.serve.http import ERRORS, ApiError, image_body, images_from
from digitrec.serve.state import ServerState, server_state

router = APIRouter()


def load_network(source):
    """The PyTorch network of the model file `source` (gradients: whichever backend predicts)."""
    from digitrec.modelfile import load_model

    return load_model(source, "cpu")[0]


def _explain(state: ServerState, image: Prepared):
    digits = prepare(image).digits
    if not len(digits):
        raise DigitrecError(NO_INK, code="no_ink")
    with state.predictor.lock:  # one model call at a time, as for predictions
        return explain_image(state.network, digits[0], state.predictor.meta, "image")


def explain_response(explanation, format: str):
    """An explanation -> the overlay PNG, or the JSON answer."""
    png = overlay_png(explanation)
    if format == "png":
        return Response(png, media_type="image/png")
    d = explanation.to_dict()
    return {"digit": d["digit"], "runner_up": d["runner_up"], "topk": d["topk"],
            "attributions": d["attributions"], "overlay": base64.b64encode(png).decode()}


@router.post("/v1/explain", responses={**ERRORS, 200: {"content": {"image/png": {}}}}, openapi_extra=image_body(False))
async def explain(request: Request, format: str = Query("json", pattern="^(json|png)$",
                                                       description="json (maps and overlay) or png (overlay)"),
                  state: ServerState = Depends(server_state)):
    """One image -> the attribution overlay (red: raises the digit's score, blue: lowers it)."""
    items = (await images_from(request, state.settings.max_bytes, many=False))[:1]
    try:
        explanation = await state.runner.run(request, items, then=lambda ready: _explain(state, ready[0][1]))
    except DigitrecError as e:
        raise ApiError(e.code, str(e)) from None  # the status from the code, as everywhere
    return explain_response(explanation, format)
