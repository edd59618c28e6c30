"""The attacker's copy of a model: a classifier fitted to the answers its queries got.

The attacker does not know the target's family, so it fits several (a logistic regression,
gradient-boosted trees, a small neural network) and keeps whichever agrees best. Labels are
hard targets. Rounded scores or probabilities are soft targets: the logistic copy fits them as
the cross-entropy they are, trees and networks regress their log-odds; with full probabilities
a logistic copy of a logistic model is exact after a few dozen queries, which is why granting
scores makes a model much cheaper to copy.
"""

from __future__ import annotations

import enum
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]


class Family(enum.StrEnum):
    """A family of copies; the values appear in the assessment JSON."""

    CONSTANT = "constant"  # every answer so far was one class
    LOGISTIC = "logistic"
    GRADIENT_BOOSTING = "gradient-boosting"
    MLP = "mlp"


# Trees need a few rows per leaf before they learn anything; below this they only add time.
_MIN_ROWS_FOR_TREES = 30
_MIN_ROWS_FOR_MLP = 20
# Full-batch L-BFGS fits a small network best on the few thousand rows an extraction needs;
# past this, Adam with early stopping is as good and several times faster.
_LBFGS_ROWS = 1500


@dataclass(frozen=True)
class Copy:
    """A fitted copy: `labels(rows)` gives its class index (0..classes-1) for each row.

    Attributes:
        family: the model family.
        on_scores: fitted to the published scores (soft targets), not to the labels alone.
        labels: rows -> the copy's class index for each.
        margin: rows -> the copy's lead of its top class over the runner-up: small near its boundary.
    """

    family: Family
    on_scores: bool
    labels: Callable[[FloatArray], IntArray]
    margin: Callable[[FloatArray], FloatArray]

    @property
    def name(self) -> str:
        """`mlp`, or `mlp:scores` for a copy fitted to scores (the assessment JSON's name)."""
        return f"{self.family}:scores" if self.on_scores else str(self.family)


ALL_FAMILIES = (Family.LOGISTIC, Family.GRADIENT_BOOSTING, Family.MLP)


def load_estimators() -> None:
    """Import the estimators' modules now: thread limits apply to the OpenMP and BLAS runtimes
    already loaded, and scikit-learn loads its OpenMP runtime with its tree ensembles."""
    import sklearn.ensemble  # noqa: PLC0415
    import sklearn.linear_model  # noqa: PLC0415
    import sklearn.neural_network  # noqa: PLC0415, F401


def fit_copies(
    rows: FloatArray,
    answers: IntArray | FloatArray,
    classes: int,
    seed: int,
    families: tuple[Family, ...] = ALL_FAMILIES,
    precision: int | None = None,
) -> list[Copy]:
    """One copy per family that can be fitted to `answers`.

    Soft answers get both kinds of copy: one per family fitted to the labels they imply, then
    one fitted to the scores themselves. Scores help most models and hurt a few (a regression
    chasing rounded tree scores); an attacker keeps whichever works, so granting scores never
    makes a copy dearer.

    Args:
        rows: the queries, shape (n, features).
        answers: class indices, shape (n,) (labels), or class probabilities, shape (n, classes)
            (soft targets: rounded scores or probabilities, their winner being the label).
        classes: how many classes the target has.
        seed: seeds every random part of every fit.
        families: which families to try.
        precision: decimals soft targets were rounded to (None: not rounded).

    Returns:
        The fitted copies; a single `CONSTANT` one in place of the label-fitted copies while
        the answers name one class only.
    """
    soft = answers.ndim == 2
    labels = np.asarray(answers.argmax(axis=1) if soft else answers, dtype=np.int64)
    with warnings.catch_warnings():
        # A copy that has not converged is still a copy: the curve measures how well it agrees.
        warnings.simplefilter("ignore")
        copies = _fit_to_labels(rows, labels, classes, seed, families)
        if soft:
            copies += _fit_to_scores(rows, answers.astype(np.float64), classes, seed, families, precision)
    return copies


def _usable(family: Family, n: int) -> bool:
    if family is Family.GRADIENT_BOOSTING:
        return n >= _MIN_ROWS_FOR_TREES
    if family is Family.MLP:
        return n >= _MIN_ROWS_FOR_MLP
    return family is Family.LOGISTIC


def _fit_to_labels(rows: FloatArray, labels: IntArray, classes: int, seed: int, families: tuple[Family, ...]) -> list[Copy]:
    present = np.unique(labels)
    if present.shape[0] < 2:
        return [_constant(int(present[0]) if present.shape[0] else 0, classes)]
    usable = [family for family in families if _usable(family, rows.shape[0])]
    return [_classifier(family, rows, labels, classes, seed) for family in usable]


def _fit_to_scores(
    rows: FloatArray, scores: FloatArray, classes: int, seed: int, families: tuple[Family, ...], precision: int | None
) -> list[Copy]:
    copies = []
    for family in families:
        if not _usable(family, rows.shape[0]):
            continue
        if family is Family.LOGISTIC:
            copy = _soft_logistic(rows, scores, classes)
            if copy is not None:
                copies.append(copy)
        else:
            copies.append(_logit_regression(family, rows, scores, classes, seed, precision))
    return copies


def _logistic_pipeline() -> object:
    from sklearn.linear_model import LogisticRegression  # noqa: PLC0415
    from sklearn.pipeline import Pipeline  # noqa: PLC0415
    from sklearn.preprocessing import StandardScaler  # noqa: PLC0415

    # Label-only answers of a linear model are separable: a weak penalty approaches the
    # maximum-margin boundary.
    return Pipeline([("scale", StandardScaler()), ("logistic", LogisticRegression(C=100.0, max_iter=2000))])


def _soft_logistic(rows: FloatArray, scores: FloatArray, classes: int) -> Copy | None:
    """Soft targets fitted as the cross-entropy they are: each row once per class, weighted by
    that class's published probability. With full probabilities a logistic copy of a logistic
    model is exact after a few dozen rows."""
    mass = _probabilities(scores, classes, 0.0)
    row_index, class_index = np.nonzero(mass > 0)
    if np.unique(class_index).shape[0] < 2:
        return None
    model = _logistic_pipeline()
    model.fit(rows[row_index], class_index, logistic__sample_weight=mass[row_index, class_index])  # type: ignore[attr-defined]  # a Pipeline
    return _wrap_classifier(Family.LOGISTIC, model, classes, on_scores=True)


def _classifier(family: Family, rows: FloatArray, labels: IntArray, classes: int, seed: int) -> Copy:
    from sklearn.ensemble import HistGradientBoostingClassifier  # noqa: PLC0415
    from sklearn.neural_network import MLPClassifier  # noqa: PLC0415
    from sklearn.pipeline import Pipeline  # noqa: PLC0415
    from sklearn.preprocessing import StandardScaler  # noqa: PLC0415

    n = rows.shape[0]
    model: object
    if family is Family.LOGISTIC:
        model = _logistic_pipeline()
    elif family is Family.GRADIENT_BOOSTING:
        model = HistGradientBoostingClassifier(
            max_iter=_boosting_rounds(n), min_samples_leaf=_leaf_rows(n), early_stopping=False, random_state=seed
        )
    else:
        model = Pipeline([("scale", StandardScaler()), ("mlp", MLPClassifier(**_mlp_settings(n, seed)))])
    model.fit(rows, labels)  # type: ignore[attr-defined]  # every scikit-learn estimator has fit
    return _wrap_classifier(family, model, classes, on_scores=False)


def _logit_regression(
    family: Family, rows: FloatArray, answers: FloatArray, classes: int, seed: int, precision: int | None
) -> Copy:
    """A regression on the published probabilities' logits: trees and networks learn the shape
    of a score surface from far fewer rows than from its sign alone."""
    from sklearn.ensemble import HistGradientBoostingRegressor  # noqa: PLC0415
    from sklearn.neural_network import MLPRegressor  # noqa: PLC0415
    from sklearn.pipeline import Pipeline  # noqa: PLC0415
    from sklearn.preprocessing import StandardScaler  # noqa: PLC0415

    n = rows.shape[0]
    # A probability published as 0 is below half a rounding step, not zero: flooring it there,
    # not at 1e-6, keeps one rounding step from becoming a leap of ten in log-odds.
    floor = _LOGIT_FLOOR if precision is None else max(_LOGIT_FLOOR, 0.5 * 10.0**-precision)
    logits = np.log(_probabilities(answers, classes, floor))
    # Two classes: one log-odds column; more: each class's log-probability against their mean.
    targets = (logits[:, 1] - logits[:, 0])[:, None] if classes == 2 else logits - logits.mean(axis=1, keepdims=True)
    models: list[object] = []
    if family is Family.GRADIENT_BOOSTING:
        for column in range(targets.shape[1]):
            model = HistGradientBoostingRegressor(
                max_iter=_boosting_rounds(n), min_samples_leaf=_leaf_rows(n), early_stopping=False, random_state=seed
            )
            model.fit(rows, targets[:, column])
            models.append(model)
    else:
        network = Pipeline([("scale", StandardScaler()), ("mlp", MLPRegressor(**_mlp_settings(n, seed)))])
        network.fit(rows, targets if targets.shape[1] > 1 else targets[:, 0])
        models.append(network)

    def scores(x: FloatArray) -> FloatArray:
        predicted = [np.asarray(m.predict(x), dtype=np.float64).reshape(x.shape[0], -1) for m in models]  # type: ignore[attr-defined]  # sklearn
        stacked = np.hstack(predicted)
        return np.hstack([np.zeros((x.shape[0], 1)), stacked]) if classes == 2 else stacked

    return _wrap_scores(family, True, scores)


# Unrounded probabilities are floored before the logarithm only to cap how sure a copy may
# learn to be.
_LOGIT_FLOOR = 1e-6


def _probabilities(answers: FloatArray, classes: int, floor: float) -> FloatArray:
    mass = np.clip(np.asarray(answers, dtype=np.float64), floor, None)
    totals = mass.sum(axis=1, keepdims=True)
    return np.where(totals > 0, mass / np.where(totals > 0, totals, 1.0), 1.0 / classes)


def _boosting_rounds(n: int) -> int:
    # A hundred rounds on a hundred rows only memorise them; fewer cost a third of the time.
    return max(30, min(100, n // 5))


def _leaf_rows(n: int) -> int:
    return max(2, min(20, n // 25))


def _mlp_settings(n: int, seed: int) -> dict[str, object]:
    if n <= _LBFGS_ROWS:
        return {"hidden_layer_sizes": (64,), "solver": "lbfgs", "alpha": 1e-3, "max_iter": 300, "random_state": seed}
    return {
        "hidden_layer_sizes": (64,), "solver": "adam", "alpha": 1e-4, "max_iter": 200, "early_stopping": True,
        "n_iter_no_change": 10, "random_state": seed,
    }


def _wrap_classifier(family: Family, estimator: object, classes: int, *, on_scores: bool) -> Copy:
    fitted_classes = np.asarray(estimator.classes_, dtype=np.int64)  # type: ignore[attr-defined]  # sklearn's fitted attribute
    predict_proba: Callable[[FloatArray], FloatArray] = estimator.predict_proba  # type: ignore[attr-defined]  # sklearn

    def probabilities(rows: FloatArray) -> FloatArray:
        full = np.zeros((rows.shape[0], classes))
        full[:, fitted_classes] = predict_proba(rows)
        return full

    return _wrap_scores(family, on_scores, probabilities)


def _wrap_scores(family: Family, on_scores: bool, scores: Callable[[FloatArray], FloatArray]) -> Copy:
    """A copy from per-class scores (probabilities or logits): the label is the top score, the
    margin its lead over the runner-up."""

    def labels(rows: FloatArray) -> IntArray:
        return np.asarray(scores(rows).argmax(axis=1), dtype=np.int64)

    def margin(rows: FloatArray) -> FloatArray:
        top = np.sort(scores(rows), axis=1)
        return top[:, -1] - top[:, -2]

    return Copy(family, on_scores, labels, margin)


def _constant(label: int, classes: int) -> Copy:
    def labels(rows: FloatArray) -> IntArray:
        return np.full(rows.shape[0], label, dtype=np.int64)

    def margin(rows: FloatArray) -> FloatArray:
        return np.ones(rows.shape[0]) if classes > 1 else np.zeros(rows.shape[0])

    return Copy(Family.CONSTANT, False, labels, margin)
