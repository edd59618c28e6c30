"""Adaptive batching: predictions asked for in the same event-loop turn run as one model call.

The same holds for any per-row function whose fixed cost per call dwarfs its cost per row: the
gateway judges the rows of every request of a turn against the training profile in one call.

A model call has a fixed cost that dwarfs the cost of a row for the tabular models a gateway
serves: scikit-learn's `predict_proba` on a 20-feature logistic regression takes about 100 µs
for one row and the same for sixteen (ONNX Runtime's `run`, about 5 µs either way). Under load, many requests reach the model in the same turn of the
event loop; the batcher stacks their rows, calls the model once at the end of that turn, and
hands each request its own slice of the answer.

Nothing waits for a batch to fill: a request that arrives alone is predicted in the next turn,
a few microseconds later, so batching costs an idle gateway nothing and gives a busy one
throughput. A batch never holds more than `max_rows` rows; a batch whose model call fails is
retried request by request, so one request cannot fail another's answer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Generic, TypeVar, cast

import numpy as np
from numpy.typing import NDArray

Answer = TypeVar("Answer", bound=np.ndarray[Any, Any])
DEFAULT_MAX_ROWS = 512


class Batcher(Generic[Answer]):
    """Coalesces calls of one per-row function per event-loop turn (use from the loop's thread only).

    `predict` maps (n, d) rows to an answer whose first axis is the n rows: each request gets
    its own rows' slice.
    """

    def __init__(self, predict: Callable[[NDArray[np.float32]], Answer], max_rows: int = DEFAULT_MAX_ROWS) -> None:
        self._predict = predict
        self.max_rows = max(1, max_rows)
        self._pending: list[tuple[NDArray[np.float32], asyncio.Future[Answer]]] = []
        self._scheduled = False
        self.calls = 0  # model calls made, for tests and metrics
        self.rows = 0  # rows predicted

    def predict(self, rows: NDArray[np.float32]) -> asyncio.Future[Answer]:
        """A future of the answer for `rows`, resolved at the end of this loop turn."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Answer] = loop.create_future()
        self._pending.append((rows, future))
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._run)
        return future

    def _run(self) -> None:
        pending, self._pending = self._pending, []
        self._scheduled = False
        start = 0
        while start < len(pending):
            end, size = start, 0
            while end < len(pending) and (end == start or size + pending[end][0].shape[0] <= self.max_rows):
                size += pending[end][0].shape[0]
                end += 1
            self._run_batch(pending[start:end])
            start = end

    def _run_batch(self, batch: list[tuple[NDArray[np.float32], asyncio.Future[Answer]]]) -> None:
        try:  # rows of another width cannot be stacked: that too is retried one by one
            rows = batch[0][0] if len(batch) == 1 else np.concatenate([r for r, _ in batch])
            answers = self._predict(rows)
            self.calls += 1
            self.rows += rows.shape[0]
        except Exception as error:  # handed to the requests, not swallowed
            if len(batch) > 1:
                for one in batch:  # find the request the model refuses; the others get answers
                    self._run_batch([one])
                return
            if not batch[0][1].done():  # the request was cancelled (its client went away)
                batch[0][1].set_exception(error)
            return
        offset = 0
        for part, future in batch:
            count = part.shape[0]
            if not future.done():  # the request was cancelled (its client went away)
                future.set_result(cast(Answer, answers[offset : offset + count]))
            offset += count
