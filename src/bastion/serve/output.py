"""What a caller learns from an answer: the label by default; a rounded score or the full
probabilities only for keys granted that detail.

Less detail makes extraction dearer: on a 20-feature logistic regression, full probabilities
give away a 99%-agreement copy in about 21 queries, scores rounded to one decimal in about 200,
labels alone in about 1,000.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numpy.typing import NDArray

DETAILS = ("label", "score", "probabilities")


def shape_outputs(
    probabilities: NDArray[np.float64], labels: tuple[str, ...], detail: str, precision: int | None
) -> list[dict[str, Any]]:
    """V2 output tensors for `probabilities` (rows × classes), cut down to `detail`."""
    batch = int(probabilities.shape[0])
    if batch == 1 and detail == "label":  # the common answer, without numpy calls past `tolist`
        row: list[float] = probabilities[0].tolist()
        if not any(math.isnan(p) for p in row):  # argmax takes a NaN for the maximum; max() does not
            best = max(row)  # the first class holding the maximum, as argmax picks it
            return [{"name": "label", "datatype": "BYTES", "shape": [1], "data": [labels[row.index(best)]]}]
    winners = probabilities.argmax(axis=1)
    outputs: list[dict[str, Any]] = [
        {"name": "label", "datatype": "BYTES", "shape": [batch], "data": [labels[i] for i in winners.tolist()]}
    ]
    if detail == "score":
        scores = probabilities[np.arange(batch), winners]
        if precision is not None:
            scores = np.round(scores, precision)
        outputs.append({"name": "score", "datatype": "FP64", "shape": [batch], "data": scores.tolist()})
    elif detail == "probabilities":
        full = probabilities if precision is None else np.round(probabilities, precision)
        outputs.append(
            {"name": "probabilities", "datatype": "FP64", "shape": list(full.shape), "data": full.ravel().tolist()}
        )
    return outputs
