"""POST /v1/explain: why the model says what it says, for one image (the drawing page's "Explain" toggle).

The image goes through the same preprocessing as /v1/predict; the answer is the attribution overlay of
`digitrec.analysis.explain` (Integrated Gradients, for the predicted digit and the runner-up) as a PNG
(`?format=png`), or JSON with the digit, top 3, both 28x28 maps and the overlay as base64 PNG (default).
Needs the `learn` extra (captum) and the PyTorch backend; otherwise it answers 503 / 501 in the usual
`{"error", "detail"}` form, and the rest of the server works as before."""

from __future__ import annotations

import base64

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from digitrec.analysis.explain import explain_image, overlay_png
from digitrec.errors import DigitrecError
from digitrec.imaging.prepare import Prepared, prepare
from digitrec.inference.predict import NO_INK, Predictor
from digitrec.serve.app import ERRORS, ApiError, _image_body, images_from


def explain_router(predictor: Predictor, max_bytes: int, prepared) -> APIRouter:
    """prepared: the server's sandboxed preparation (app.create_app's `prepared`), as for every other image."""
    from digitrec.modelfile import load_model

    router = APIRouter()
    network = load_model(predictor.source, "cpu")[0]  # gradients: the PyTorch model, whichever backend predicts

    def explain_sync(image: Prepared):
        digits = prepare(image).digits
        if not len(digits):
            raise DigitrecError(NO_INK, code="no_ink")
        digit = digits[0]
        with predictor.lock:  # one model call at a time, as for predictions
            return explain_image(network, digit, predictor.meta, "image")

    @router.post("/v1/explain", responses={**ERRORS, 200: {"content": {"image/png": {}}}},
                 openapi_extra=_image_body(False))
    async def explain(request: Request, format: str = Query("json", pattern="^(json|png)$",
                                                           description="json (maps and overlay) or png (overlay)")):
        """One image -> the attribution overlay (red: raises the digit's score, blue: lowers it)."""
        try:
            e = await prepared(request, (await images_from(request, max_bytes, many=False))[:1],
                               then=lambda items: explain_sync(items[0][1]))
        except DigitrecError as err:
            raise ApiError(err.code, str(err)) from None  # the status from the code, as everywhere
        png = overlay_png(e)
        if format == "png":
            return Response(png, media_type="image/png")
        d = e.to_dict()
        return {"digit": d["digit"], "runner_up": d["runner_up"], "topk": d["topk"],
                "attributions": d["attributions"], "overlay": base64.b64encode(png).decode()}

    return router
