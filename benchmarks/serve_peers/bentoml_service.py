"""BentoML 1.4: a service whose API takes the V2 request's own fields (`inputs`, `id`) as its
JSON parameters, at POST /infer, and answers the same V2 document. One worker; metrics and
access logs off.

    MODEL_DIR=... bentoml serve bentoml_service:Classifier --port 8102   (from benchmarks/serve_peers)
"""

from __future__ import annotations

from typing import Any

import bentoml
from v2_model import answer, labels, load_predictor, model_dir, rows_of


@bentoml.service(workers=1, metrics={"enabled": False}, logging={"access": {"enabled": False}})
class Classifier:
    def __init__(self) -> None:
        folder = model_dir()
        self.predict = load_predictor(folder)
        self.labels = labels(folder)

    @bentoml.api
    def infer(self, inputs: list[dict[str, Any]], id: str | None = None) -> dict[str, Any]:
        return answer("fraud", id, self.predict(rows_of(inputs[0])), self.labels)
