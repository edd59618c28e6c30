"""ASSESS: how many answers does a thief need to copy this model?

The extraction cost of a model is the number of label-only queries an outside attacker needs
for a copy that agrees with it on 90, 95 or 99 % of typical inputs. The attacker knows what
the model publishes (`serving.yaml`: input ranges, and the training profile's per-feature
quantiles when it ships one), and, for Knockoff, a sample of real inputs. No detector stops a
thief who needs only 150 answers and spends them like a customer; this number is what quotas
and account budgets are set against (`extraction_queries_95`).

`measure_extraction_cost` runs the strongest attacks offline against the loaded model, each
along a geometric grid of query counts:

- ``ranges-uniform``: rows uniform over the published ranges;
- ``marginals``: each feature drawn on its own from the profile's marginals;
- ``boundary``: a few dozen marginal rows, then, round after round, the candidates nearest the
  current copy's decision boundary (smallest margin), with a share of fresh rows to explore;
- ``knockoff``: real rows (half of `heldout`; the other half measures agreement);
- ``scores-…``: when the key gets scores or probabilities, the same attacks with copies fitted
  to the (rounded) probabilities, which need far fewer queries.

At each grid point the attacker fits a logistic regression, gradient-boosted trees and a small
MLP (`bastion.assess.copies`) and the curve records the best agreement: the attacker does not
know the family, and a strong one picks the right one on its own validation data, so taking
the best errs on the defender's side. A curve stops at the first point that reaches 99 %.

Agreement is measured on held-out real rows when given: a copy is worth what it gets right on
real traffic. Without them it is measured on rows drawn feature by feature from the profile's
marginals, which are not real traffic and can misstate the cost either way: on a 100-tree
gradient-boosting classifier of the gateway's 20-feature test data it put 95 % out of reach of
5,000 queries where real rows showed 700. The result says which (`ExtractionCost.evaluated_on`); budget on held-out figures.

Sampling noise in the evaluation rows (about ±1 % at 1,000 rows) can make a curve touch a level
a grid point early; with the best of several copies and attacks taken, the figure errs low,
on the defender's side.

Example:
    >>> cost = measure_extraction_cost(predict, spec, heldout=x_test)     # doctest: +SKIP
    >>> cost.queries_for(0.95), cost.metrics()["extraction_queries_95"]  # doctest: +SKIP
    (150, 150.0)
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray
from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]  # a one-module package without type hints

from bastion.assess.copies import Copy, Family, fit_copies, load_estimators
from bastion.assess.input_space import InputSpace
from bastion.errors import ArtifactError, ConfigError
from bastion.serve.output import DETAILS

if TYPE_CHECKING:
    from bastion.serve.loaders import Predictor
    from bastion.serve.spec import ServingSpec

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]

LEVELS: tuple[float, ...] = (0.90, 0.95, 0.99)
METRIC_PREFIX = "extraction_queries_"
EVALUATION_ROWS = 2000
# Rows the boundary attack draws before it has a copy worth asking for a margin.
BOUNDARY_SEED_ROWS = 50
# Share of each boundary round spent on fresh rows: a copy is blind where it is confidently
# wrong, and only exploring finds those regions of a non-linear model.
BOUNDARY_EXPLORE = 0.2
BOUNDARY_CANDIDATES = 4000


class Attack(enum.StrEnum):
    """The attacks; the values are the curve names in the assessment JSON."""

    RANGES_UNIFORM = "ranges-uniform"
    MARGINALS = "marginals"
    BOUNDARY = "boundary"
    KNOCKOFF = "knockoff"
    SCORES_RANGES_UNIFORM = "scores-ranges-uniform"
    SCORES_MARGINALS = "scores-marginals"
    SCORES_BOUNDARY = "scores-boundary"
    SCORES_KNOCKOFF = "scores-knockoff"


_LABEL_ATTACKS = (Attack.RANGES_UNIFORM, Attack.MARGINALS, Attack.BOUNDARY, Attack.KNOCKOFF)
# With scores or probabilities granted, each attack fits copies both to the labels and to the
# scores (`fit_copies`), so a label-only curve beside it would only repeat its label copies.
_SCORED = {
    Attack.RANGES_UNIFORM: Attack.SCORES_RANGES_UNIFORM,
    Attack.MARGINALS: Attack.SCORES_MARGINALS,
    Attack.BOUNDARY: Attack.SCORES_BOUNDARY,
    Attack.KNOCKOFF: Attack.SCORES_KNOCKOFF,
}


class Evaluation(enum.StrEnum):
    """What agreement is measured on."""

    HELDOUT = "heldout"  # real rows the attacker never queried: the honest measure
    PROFILE_MARGINALS = "profile-marginals"  # not real traffic: can misstate the cost either way
    RANGES_UNIFORM = "ranges-uniform"  # no profile, no data: agreement far from real inputs


@dataclass(frozen=True, slots=True)
class AttackCurve:
    """One attack's agreement with the model as its query count grows.

    Attributes:
        attack: the attack's name (an `Attack` value).
        queries: the grid of query counts measured.
        agreement: at each count, the best copy's share of evaluation rows labelled as the model does.
        copies: at each count, that best copy's family (`mlp`; `mlp:scores` if fitted to scores).
    """

    attack: str
    queries: tuple[int, ...]
    agreement: tuple[float, ...]
    copies: tuple[str, ...] = ()

    def queries_for(self, level: float) -> int | None:
        """The first query count whose agreement reaches `level`; None if none in the grid does."""
        for count, agreed in zip(self.queries, self.agreement, strict=True):
            if agreed >= level:
                return count
        return None


@dataclass(frozen=True, slots=True)
class ExtractionCost:
    """What copying the model costs, by attack.

    Attributes:
        curves: one per attack run.
        max_queries: the largest query count tried.
        output: what the attacker's key returns ("label", "score" or "probabilities").
        precision: the decimals scores or probabilities were rounded to (None: not rounded).
        evaluated_on: what agreement was measured on (an `Evaluation` value).
        evaluation_rows: how many rows it was measured on.
        seed: the seed the measurement used.
    """

    curves: tuple[AttackCurve, ...]
    max_queries: int
    output: str
    precision: int | None = None
    evaluated_on: str = Evaluation.HELDOUT
    evaluation_rows: int = 0
    seed: int = 0

    def queries_for(self, level: float) -> int | None:
        """The fewest queries any attack needed to reach `level`; None if none did within `max_queries`."""
        reached = [count for curve in self.curves if (count := curve.queries_for(level)) is not None]
        return min(reached) if reached else None

    def best_attack(self, level: float) -> str | None:
        """The attack that reached `level` with the fewest queries (the first listed on a tie)."""
        best: tuple[int, str] | None = None
        for curve in self.curves:
            count = curve.queries_for(level)
            if count is not None and (best is None or count < best[0]):
                best = (count, curve.attack)
        return None if best is None else best[1]

    def metrics(self) -> dict[str, float]:
        """`extraction_queries_90`, `_95` and `_99`: the fewest queries for that agreement.

        A level no attack reached within `max_queries` is reported as `2 * max_queries`: the
        true cost is more than `max_queries`, and a number (not a missing value) keeps a gate's
        `assessment_min` meaningful. `metric_reached` tells the two apart.
        """
        return {metric_name(level): float(self.queries_for(level) or 2 * self.max_queries) for level in LEVELS}

    def metric_reached(self) -> dict[str, bool]:
        """Per metric: whether the level was reached within `max_queries` (else its value is "more than")."""
        return {metric_name(level): self.queries_for(level) is not None for level in LEVELS}


def metric_name(level: float) -> str:
    """`extraction_queries_95` for 0.95."""
    return f"{METRIC_PREFIX}{round(level * 100)}"


def query_grid(max_queries: int) -> tuple[int, ...]:
    """10, 20, ..., 100, then 150, 200, 300, 400, 500, 700, 1000, 1500, ... up to `max_queries` (always last)."""
    grid = list(range(10, 101, 10))
    decade = 100
    while grid[-1] < max_queries:
        grid += [round(step * decade) for step in (1.5, 2, 3, 4, 5, 7, 10)]
        decade *= 10
    return (*(count for count in grid if count < max_queries), max_queries)


def measure_extraction_cost(
    predict_proba: Predictor,
    spec: ServingSpec,
    *,
    heldout: NDArray[np.floating] | None = None,
    output: str = "label",
    precision: int | None = None,
    max_queries: int = 5000,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
) -> ExtractionCost:
    """Measure how many queries each attack needs to copy the model behind `predict_proba`.

    Args:
        predict_proba: the loaded model (rows -> class probabilities), as the gateway serves it.
        spec: its serving.yaml: the published ranges and profile the attacker starts from.
        heldout: real rows (n, features) the model was not trained on; half feed Knockoff, half
            measure agreement. None: no Knockoff, agreement measured on profile-marginal rows.
        output: what the attacker's key returns: "label", "score" (top class's probability)
            or "probabilities".
        precision: decimals the key's scores or probabilities are rounded to (None: full).
        max_queries: the most queries an attack may spend (the grid's last point).
        seed: seeds every random choice; the same seed gives the same result.
        progress: called with one line per measured grid point.

    Returns:
        The curves, one per attack.

    Raises:
        ConfigError: a bad argument, or a serving.yaml with no published input space.
        ArtifactError: `heldout` or the model's answers do not fit the spec.
    """
    if output not in DETAILS:
        raise ConfigError(f"output {output!r} is not one of {', '.join(DETAILS)}")
    if precision is not None and not 0 <= precision <= 12:
        raise ConfigError(f"precision {precision} is outside 0..12")
    if max_queries < 10:
        raise ConfigError(f"max_queries {max_queries} is below 10, the grid's first point")
    space = InputSpace.from_spec(spec)
    oracle = _Oracle(predict_proba, len(spec.labels), output, precision)
    # One stream for the evaluation rows and one per attack, fixed by the attack's place in
    # `_LABEL_ATTACKS`: an attack's curve does not change because another one did not run.
    streams = np.random.SeedSequence(seed).spawn(1 + len(_LABEL_ATTACKS))
    evaluation, pool, evaluated_on = _split_rows(space, heldout, np.random.default_rng(streams[0]))
    truth = oracle.labels(evaluation)
    grid = query_grid(max_queries)
    say = progress or (lambda _line: None)
    say(f"agreement measured on {evaluation.shape[0]} {evaluated_on} rows; grid {grid[0]}..{grid[-1]} queries")
    skipped = {Attack.MARGINALS} if not space.has_marginals else set()
    if pool is None:
        skipped.add(Attack.KNOCKOFF)
    curves = []
    # Hundreds of small fits: thread pools only add hand-offs, and OpenMP's spinning threads
    # made gradient boosting twenty times slower on a busy 2-core machine.
    load_estimators()
    with threadpool_limits(limits=1):
        for index, attack in enumerate(_LABEL_ATTACKS, start=1):
            if attack in skipped:
                continue
            name = attack if output == "label" else _SCORED[attack]
            run = _AttackRun(name, oracle, evaluation, truth, grid, np.random.default_rng(streams[index]), say)
            if attack is Attack.BOUNDARY:
                curves.append(run.boundary(space))
            else:
                curves.append(run.passive(_sampler(attack, space, pool)))
    return ExtractionCost(
        curves=tuple(curves), max_queries=max_queries, output=output, precision=precision,
        evaluated_on=evaluated_on, evaluation_rows=int(evaluation.shape[0]), seed=seed,
    )


Sampler = Callable[[np.random.Generator, int], FloatArray]


def _sampler(attack: Attack, space: InputSpace, pool: FloatArray | None) -> Sampler:
    if attack is Attack.RANGES_UNIFORM:
        return space.uniform
    if attack is Attack.MARGINALS:
        return space.marginals
    if pool is None:
        raise ValueError("Knockoff needs real rows")

    def real_rows(rng: np.random.Generator, rows: int) -> FloatArray:
        # Without replacement: a thief with a data set asks about each row once.
        chosen = rng.permutation(pool.shape[0])[: min(rows, pool.shape[0])]
        return space.conform(pool[chosen])

    return real_rows


def _split_rows(
    space: InputSpace, heldout: NDArray[np.floating] | None, rng: np.random.Generator
) -> tuple[FloatArray, FloatArray | None, Evaluation]:
    """Evaluation rows, the Knockoff pool (None without real rows), and what the evaluation rows are."""
    if heldout is None:
        if space.has_marginals:
            return space.marginals(rng, EVALUATION_ROWS), None, Evaluation.PROFILE_MARGINALS
        return space.uniform(rng, EVALUATION_ROWS), None, Evaluation.RANGES_UNIFORM
    rows = np.asarray(heldout, dtype=np.float64)
    if rows.ndim != 2 or rows.shape[1] != space.features:
        raise ArtifactError(
            f"held-out data has shape {rows.shape}; the model takes rows of {space.features} features",
            hint="Pass one row per record and one column per feature (name the label column with --label).",
        )
    if rows.shape[0] < 20:
        raise ArtifactError(f"held-out data has {rows.shape[0]} rows; at least 20 are needed", hint="Pass more rows.")
    if not np.isfinite(rows).all():
        raise ArtifactError("held-out data contains NaN or infinity", hint="Drop or impute those rows first.")
    order = rng.permutation(rows.shape[0])
    evaluation = min(EVALUATION_ROWS, rows.shape[0] // 2)
    return rows[order[:evaluation]], rows[order[evaluation:]], Evaluation.HELDOUT


class _Oracle:
    """The served model as a key of the given output sees it."""

    def __init__(self, predict_proba: Predictor, classes: int, output: str, precision: int | None) -> None:
        self._predict = predict_proba
        self.classes = classes
        self.output = output
        self.precision = precision

    def probabilities(self, rows: FloatArray) -> FloatArray:
        answer = np.asarray(self._predict(np.ascontiguousarray(rows, dtype=np.float32)), dtype=np.float64)
        if answer.shape != (rows.shape[0], self.classes):
            raise ArtifactError(
                f"the model answered {rows.shape[0]} rows with shape {answer.shape}, not ({rows.shape[0]}, {self.classes})",
                hint="serving.yaml's labels must list one name per class the model outputs.",
            )
        return answer

    def labels(self, rows: FloatArray) -> IntArray:
        return np.asarray(self.probabilities(rows).argmax(axis=1), dtype=np.int64)

    def answers(self, rows: FloatArray) -> IntArray | FloatArray:
        """What the key returns, as training targets: class indices, or (n, classes) soft targets."""
        full = self.probabilities(rows)
        winners = full.argmax(axis=1)
        if self.output == "label":
            return np.asarray(winners, dtype=np.int64)
        index = np.arange(full.shape[0])
        if self.output == "probabilities":
            soft = full if self.precision is None else np.round(full, self.precision)
        else:  # "score": the winner's probability; the rest of the mass spread over the other classes
            score = full[index, winners]
            if self.precision is not None:
                score = np.round(score, self.precision)
            soft = np.repeat(((1.0 - score) / max(1, self.classes - 1))[:, None], self.classes, axis=1)
            soft[index, winners] = score
        # Every answer carries the label too: where rounding made the winner tie or trail, it
        # still gets the most mass, by half a rounding step.
        step = 0.5 * 10.0 ** -(self.precision if self.precision is not None else 6)
        others = soft.copy()
        others[index, winners] = -np.inf
        soft[index, winners] = np.maximum(soft[index, winners], others.max(axis=1) + step)
        return soft


@dataclass
class _AttackRun:
    name: Attack
    oracle: _Oracle
    evaluation: FloatArray
    truth: IntArray
    grid: tuple[int, ...]
    rng: np.random.Generator
    say: Callable[[str], None]
    counts: list[int] = field(default_factory=list)
    agreement: list[float] = field(default_factory=list)
    families: list[str] = field(default_factory=list)

    def passive(self, sample: Sampler) -> AttackCurve:
        """Queries fixed in advance: the curve's points are prefixes of one stream of rows."""
        rows = sample(self.rng, self.grid[-1])
        answers = self.oracle.answers(rows)
        for count in self.grid:
            if count > rows.shape[0]:  # Knockoff ran out of real rows
                break
            self._measure(rows[:count], answers[:count])
            if self._done():
                break
        return self._curve()

    def boundary(self, space: InputSpace) -> AttackCurve:
        """Active learning: each round asks about the candidates the current copy is least sure of."""
        rows = np.empty((0, space.features))
        answers: IntArray | FloatArray | None = None
        copy: Copy | None = None
        for count in self.grid:
            extra = self._boundary_rows(space, copy, count - rows.shape[0])
            rows = np.concatenate([rows, extra])
            answered = self.oracle.answers(extra)
            answers = answered if answers is None else np.concatenate([answers, answered])
            copy = self._measure(rows, answers)
            if self._done():
                break
        return self._curve()

    def _boundary_rows(self, space: InputSpace, copy: Copy | None, wanted: int) -> FloatArray:
        # Until a copy with two classes and a few dozen answers exists, its margins mean nothing.
        if copy is None or copy.family is Family.CONSTANT or self._queried() < BOUNDARY_SEED_ROWS:
            return space.marginals(self.rng, wanted)
        explore = math.ceil(wanted * BOUNDARY_EXPLORE)
        fresh = space.marginals(self.rng, explore)
        candidates = space.marginals(self.rng, max(BOUNDARY_CANDIDATES, 10 * (wanted - explore)))
        nearest = np.argsort(copy.margin(candidates), kind="stable")[: wanted - explore]
        return np.concatenate([candidates[nearest], fresh])

    def _queried(self) -> int:
        return self.counts[-1] if self.counts else 0

    def _fit(self, rows: FloatArray, answers: IntArray | FloatArray) -> list[Copy]:
        seed = int(self.rng.integers(2**31 - 1))
        return fit_copies(rows, answers, self.oracle.classes, seed, precision=self.oracle.precision)

    def _measure(self, rows: FloatArray, answers: IntArray | FloatArray) -> Copy:
        copies = self._fit(rows, answers)
        scores = [float(np.mean(copy.labels(self.evaluation) == self.truth)) for copy in copies]
        best = int(np.argmax(scores))
        self.counts.append(int(rows.shape[0]))
        self.agreement.append(scores[best])
        self.families.append(copies[best].name)
        self.say(f"{self.name}: {rows.shape[0]} queries, {scores[best]:.1%} agreement ({copies[best].name})")
        return copies[best]

    def _done(self) -> bool:
        return bool(self.agreement) and self.agreement[-1] >= LEVELS[-1]

    def _curve(self) -> AttackCurve:
        return AttackCurve(str(self.name), tuple(self.counts), tuple(self.agreement), tuple(self.families))
