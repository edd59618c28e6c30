"""Adaptive batching: predictions asked for in one event-loop turn share one model call.

The predictor used here answers each row with `[sum, -sum]` of its features, and every request
carries rows of its own (no two requests share a row sum), so an answer handed to the wrong
request, or rows reordered inside a batch, shows up as a wrong answer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

import numpy as np
from numpy.typing import NDArray

from bastion.serve.batching import Batcher
from corpus.hang_guard import HANG_GUARD


def _answer(rows: NDArray[np.float32]) -> NDArray[np.float64]:
    total = rows.astype(np.float64).sum(axis=1)
    return np.stack([total, -total], axis=1)


class Model:
    """A predictor that records every batch it is given (including the ones it refuses)."""

    def __init__(self, refuse: bool = False) -> None:
        self.refuse = refuse  # raise for any batch holding a NaN
        self.batches: list[NDArray[np.float32]] = []

    def __call__(self, rows: NDArray[np.float32]) -> NDArray[np.float64]:
        self.batches.append(rows.copy())
        if self.refuse and np.isnan(rows).any():
            raise ValueError(f"the model refuses NaN ({rows.shape[0]} rows)")
        return _answer(rows)

    @property
    def sizes(self) -> list[int]:
        return [batch.shape[0] for batch in self.batches]


def _requests(sizes: Iterable[int], width: int = 4) -> list[NDArray[np.float32]]:
    """One array per request; request i's row j sums to 1000*i + j + width - 1, unique across requests."""
    out = []
    for i, size in enumerate(sizes):
        rows = np.ones((size, width), dtype=np.float32)
        rows[:, 0] = 1000 * i + np.arange(size)
        out.append(rows)
    return out


async def _ask(batcher: Batcher, rows: NDArray[np.float32]) -> NDArray[np.float64]:
    return await batcher.predict(rows)


def test_requests_in_one_turn_share_one_model_call_and_each_gets_its_own_rows() -> None:
    sizes = [1, 3, 1, 5, 2] * 4
    requests = _requests(sizes)
    model = Model()
    batcher = Batcher(model)

    async def scenario() -> list[NDArray[np.float64]]:
        return await asyncio.gather(*(_ask(batcher, rows) for rows in requests))

    answers = asyncio.run(scenario())

    assert len(model.batches) == 1
    np.testing.assert_array_equal(model.batches[0], np.concatenate(requests))
    for rows, answer in zip(requests, answers, strict=True):
        assert answer.shape == (rows.shape[0], 2)
        np.testing.assert_array_equal(answer, _answer(rows))
    assert batcher.calls == 1
    assert batcher.rows == sum(sizes)


def test_a_lone_request_is_answered_on_the_next_turn_without_a_timer() -> None:
    model = Model()
    batcher = Batcher(model)
    (rows,) = _requests([3])

    async def scenario() -> tuple[int, NDArray[np.float64]]:
        future = batcher.predict(rows)
        turns = 0
        while not future.done() and turns < 10:
            await asyncio.sleep(0)  # one loop turn, no timer
            turns += 1
        return turns, future.result()

    turns, answer = asyncio.run(scenario())

    assert turns <= 2
    np.testing.assert_array_equal(answer, _answer(rows))
    assert model.sizes == [3]
    assert (batcher.calls, batcher.rows) == (1, 3)


def test_max_rows_caps_every_batch_and_each_request_still_gets_its_own_answer() -> None:
    model = Model()
    batcher = Batcher(model, max_rows=5)
    requests = _requests([3, 3, 3])

    async def scenario() -> list[NDArray[np.float64]]:
        return await asyncio.gather(*(_ask(batcher, rows) for rows in requests))

    answers = asyncio.run(scenario())

    assert model.sizes == [3, 3, 3]  # 3 + 3 > 5: no two of them fit together
    for rows, answer in zip(requests, answers, strict=True):
        np.testing.assert_array_equal(answer, _answer(rows))
    assert (batcher.calls, batcher.rows) == (3, 9)


def test_max_rows_still_coalesces_requests_that_fit_together() -> None:
    model = Model()
    batcher = Batcher(model, max_rows=5)
    requests = _requests([2, 3, 1, 4])

    async def scenario() -> list[NDArray[np.float64]]:
        return await asyncio.gather(*(_ask(batcher, rows) for rows in requests))

    answers = asyncio.run(scenario())

    assert max(model.sizes) <= 5
    assert sum(model.sizes) == 10
    assert len(model.batches) == 2  # 10 rows cannot go in fewer than two batches of 5
    np.testing.assert_array_equal(np.concatenate(model.batches), np.concatenate(requests))
    for rows, answer in zip(requests, answers, strict=True):
        np.testing.assert_array_equal(answer, _answer(rows))


def test_a_request_larger_than_max_rows_is_predicted_alone() -> None:
    model = Model()
    batcher = Batcher(model, max_rows=5)
    requests = _requests([2, 7, 1])

    async def scenario() -> list[NDArray[np.float64]]:
        return await asyncio.gather(*(_ask(batcher, rows) for rows in requests))

    answers = asyncio.run(scenario())

    assert 7 in model.sizes
    np.testing.assert_array_equal(model.batches[model.sizes.index(7)], requests[1])
    assert all(size <= 5 for size in model.sizes if size != 7)
    for rows, answer in zip(requests, answers, strict=True):
        np.testing.assert_array_equal(answer, _answer(rows))
    assert batcher.rows == 10


def test_a_request_the_model_refuses_fails_alone_and_the_others_are_answered() -> None:
    model = Model(refuse=True)
    batcher = Batcher(model)
    sizes = [2, 1, 3, 2, 1, 4, 1, 2]
    requests = _requests(sizes)
    poisoned = {3, 6}
    for index in poisoned:
        requests[index][-1, 1] = np.nan

    async def scenario() -> list[NDArray[np.float64] | BaseException]:
        return await asyncio.gather(*(_ask(batcher, rows) for rows in requests), return_exceptions=True)

    answers = asyncio.run(scenario())

    for index, (rows, answer) in enumerate(zip(requests, answers, strict=True)):
        if index in poisoned:
            assert isinstance(answer, ValueError)
            assert f"({rows.shape[0]} rows)" in str(answer)  # the error of its own model call
        else:
            assert isinstance(answer, np.ndarray)
            np.testing.assert_array_equal(answer, _answer(rows))
    healthy = [size for index, size in enumerate(sizes) if index not in poisoned]
    assert batcher.calls == len(healthy)  # refused calls are not counted
    assert batcher.rows == sum(healthy)


def test_a_model_that_refuses_everything_fails_every_request_with_its_error() -> None:
    model = Model(refuse=True)
    batcher = Batcher(model)
    requests = _requests([1, 2, 3])
    for rows in requests:
        rows[0, 2] = np.nan

    async def scenario() -> list[NDArray[np.float64] | BaseException]:
        return await asyncio.gather(*(_ask(batcher, rows) for rows in requests), return_exceptions=True)

    answers = asyncio.run(scenario())

    assert all(isinstance(answer, ValueError) for answer in answers)
    assert (batcher.calls, batcher.rows) == (0, 0)


def test_a_request_cancelled_before_its_batch_runs_does_not_disturb_the_others() -> None:
    model = Model()
    batcher = Batcher(model)
    requests = _requests([2, 1, 3, 1, 2])

    async def scenario() -> tuple[list[asyncio.Task[NDArray[np.float64]]], int, NDArray[np.float64]]:
        tasks = [asyncio.ensure_future(_ask(batcher, rows)) for rows in requests]
        await asyncio.sleep(0)  # every task has asked; the batch runs on the next turn
        calls_before = batcher.calls
        tasks[2].cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        later = await batcher.predict(requests[0])  # the batcher keeps working
        return tasks, calls_before, later

    tasks, calls_before, later = asyncio.run(scenario())

    assert calls_before == 0  # the cancellation came before the model call
    assert tasks[2].cancelled()
    for index, (rows, task) in enumerate(zip(requests, tasks, strict=True)):
        if index != 2:
            np.testing.assert_array_equal(task.result(), _answer(rows))
    np.testing.assert_array_equal(later, _answer(requests[0]))
    assert batcher.calls == 2


def test_requests_in_separate_turns_make_separate_calls() -> None:
    model = Model()
    batcher = Batcher(model)
    first = _requests([1, 2, 3])
    second = _requests([4, 1, 1, 2, 9])[1:]  # other rows than the first wave's

    async def scenario() -> tuple[list[NDArray[np.float64]], list[NDArray[np.float64]]]:
        wave1 = [batcher.predict(rows) for rows in first]
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        wave2 = [batcher.predict(rows) for rows in second]
        return await asyncio.gather(*wave1), await asyncio.gather(*wave2)

    answers1, answers2 = asyncio.run(scenario())

    assert len(model.batches) == 2
    np.testing.assert_array_equal(model.batches[0], np.concatenate(first))
    np.testing.assert_array_equal(model.batches[1], np.concatenate(second))
    for rows, answer in zip(first + second, answers1 + answers2, strict=True):
        np.testing.assert_array_equal(answer, _answer(rows))
    assert (batcher.calls, batcher.rows) == (2, 6 + 13)


def test_a_request_of_another_width_cannot_stall_the_others() -> None:
    model = Model()
    batcher = Batcher(model)
    requests = _requests([2, 1, 3])
    odd = np.ones((1, 5), dtype=np.float32)  # five features where the others have four

    async def scenario() -> list[NDArray[np.float64] | BaseException]:
        asked = [_ask(batcher, rows) for rows in [requests[0], odd, *requests[1:]]]
        return await asyncio.wait_for(asyncio.gather(*asked, return_exceptions=True), timeout=HANG_GUARD)

    answers = asyncio.run(scenario())

    normal = [answers[0], *answers[2:]]
    for rows, answer in zip(requests, normal, strict=True):
        assert isinstance(answer, np.ndarray)
        np.testing.assert_array_equal(answer, _answer(rows))
    odd_answer = answers[1]
    assert isinstance(odd_answer, Exception) or (
        isinstance(odd_answer, np.ndarray) and np.array_equal(odd_answer, _answer(odd))
    )
