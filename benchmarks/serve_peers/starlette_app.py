"""Bare Starlette: parse the V2 request with orjson, run the model, answer; no checks at all.

    MODEL_DIR=... uvicorn --app-dir benchmarks/serve_peers starlette_app:app --port 8100
"""

from __future__ import annotations

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from v2_model import answer, labels, load_predictor, model_dir, rows_of

FOLDER = model_dir()
PREDICT = load_predictor(FOLDER)
LABELS = labels(FOLDER)


async def infer(request: Request) -> Response:
    document = orjson.loads(await request.body())
    rows = rows_of(document["inputs"][0])
    result = answer(request.path_params["name"], document.get("id"), PREDICT(rows), LABELS)
    return Response(orjson.dumps(result), media_type="application/json")


app = Starlette(routes=[Route("/v2/models/{name}/infer", infer, methods=["POST"])])
