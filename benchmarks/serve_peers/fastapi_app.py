"""FastAPI as its documentation writes it: a pydantic model of the V2 request, the dict answer
serialised by FastAPI; no checks beyond the request's types.

    MODEL_DIR=... uvicorn --app-dir benchmarks/serve_peers fastapi_app:app --port 8101
"""

from __future__ import annotations

from typing import Any

import numpy as np
from fastapi import FastAPI
from pydantic import BaseModel
from v2_model import answer, labels, load_predictor, model_dir

FOLDER = model_dir()
PREDICT = load_predictor(FOLDER)
LABELS = labels(FOLDER)


class Tensor(BaseModel):
    name: str
    datatype: str
    shape: list[int]
    data: list[float]


class InferRequest(BaseModel):
    id: str | None = None
    inputs: list[Tensor]


app = FastAPI()


@app.post("/v2/models/{name}/infer")
async def infer(name: str, request: InferRequest) -> dict[str, Any]:
    tensor = request.inputs[0]
    rows = np.asarray(tensor.data, dtype=np.float32).reshape(tensor.shape)
    return answer(name, request.id, PREDICT(rows), LABELS)
