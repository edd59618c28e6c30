"""Load only what the registry promoted, re-verified at load, through a loader that runs no code.

A model is served when: its newest version in the serving stage is found; its stored bytes
still match the digests recorded at registration; its signature verifies with a trusted key;
a fresh scan is clean; its `serving.yaml` is valid; and its format has a safe loader (ONNX
through ONNX Runtime, scikit-learn through skops with an allow-list of types). Anything else
is refused with the reason, and nothing of it is loaded.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from bastion.errors import ArtifactError, BastionError, NotFound, VerificationError
from bastion.policy.schema import ScanPolicy
from bastion.registry import Principal, Registry
from bastion.registry.gate import check_scan, check_signature, check_stored_bytes
from bastion.serve.spec import ServingSpec, load_spec

Predictor = Callable[[NDArray[np.float32]], NDArray[np.float64]]  # rows -> class probabilities


@dataclass(frozen=True)
class ServedModel:
    """A verified, loaded model version and what it declared about its inputs and outputs."""

    name: str
    version: int
    root_digest: str
    spec: ServingSpec
    predict_proba: Predictor

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"


class LoadRefused(VerificationError):
    """A model version failed a check at load and is not served."""

    default_hint = "Fix what the reasons name, promote a new version, and restart or reload the gateway."

    def __init__(self, ref: str, reasons: Sequence[str]) -> None:
        super().__init__(f"{ref} is not served: " + "; ".join(reasons))
        self.ref = ref
        self.reasons = tuple(reasons)


def load_promoted(
    registry: Registry,
    caller: Principal,
    model: str,
    stage: str,
    trusted_keys: Sequence[Path],
    scan_policy: ScanPolicy | None = None,
    trusted_types: Sequence[str] = (),
) -> ServedModel:
    """The newest version of `model` in `stage`, checked and loaded; LoadRefused says why not."""
    try:
        version = registry.newest_in(caller, model, stage)
    except NotFound as err:
        raise LoadRefused(model, [err.message]) from err
    if not trusted_keys:
        raise LoadRefused(version.ref, ["no trusted signing key is configured; the gateway serves only signed models"])
    if version.layout != "folder":
        raise LoadRefused(version.ref, ["a served model is a folder holding the model file and serving.yaml"])
    with registry.checked_out(caller, version) as fetched:
        checks = [
            check_stored_bytes(version, fetched),
            check_signature(fetched, trusted_keys),
            check_scan(fetched, scan_policy or registry.policy.scan),
        ]
        failed = [f"{c.name}: {c.detail}" for c in checks if not c.passed]
        if failed:
            raise LoadRefused(version.ref, failed)
        try:
            spec = load_spec(fetched.model_path)
            predict = _load(fetched.model_path / spec.file, spec, trusted_types)
        except BastionError as err:
            raise LoadRefused(version.ref, [err.message]) from err
    return ServedModel(version.model, version.number, version.root_digest, spec, predict)


def _load(path: Path, spec: ServingSpec, trusted_types: Sequence[str]) -> Predictor:
    if not path.is_file():
        raise ArtifactError(f"{spec.file}, named in serving.yaml, is not among the model's files")
    if spec.format == "onnx":
        return _load_onnx(path, spec)
    return _load_skops(path, spec, trusted_types)


def _load_onnx(path: Path, spec: ServingSpec) -> Predictor:
    import onnxruntime  # noqa: PLC0415

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1  # requests are small; parallelism comes from serving many
    options.inter_op_num_threads = 1
    try:
        session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as err:  # ONNX Runtime raises its own untyped errors for a bad graph
        raise ArtifactError(f"{spec.file}: ONNX Runtime cannot load it: {err}") from err
    inputs = session.get_inputs()
    if len(inputs) != 1:
        raise ArtifactError(f"{spec.file}: the graph takes {len(inputs)} inputs; one is supported")
    input_name = inputs[0].name
    outputs = [o.name for o in session.get_outputs()]
    wanted = spec.probabilities_output or (outputs[1] if len(outputs) > 1 else outputs[0])
    if wanted not in outputs:
        raise ArtifactError(f"{spec.file}: no output named {wanted!r} (outputs: {', '.join(outputs)})")
    output_type = next(o.type for o in session.get_outputs() if o.name == wanted)
    if not output_type.startswith("tensor"):
        raise ArtifactError(f"{spec.file}: output {wanted!r} is {output_type}; export with zipmap=False")
    dtype = np.float64 if spec.input.datatype == "FP64" else np.float32

    def predict(rows: NDArray[np.float32]) -> NDArray[np.float64]:
        result = session.run([wanted], {input_name: rows.astype(dtype, copy=False)})[0]
        return np.asarray(result, dtype=np.float64)

    return predict


def _load_skops(path: Path, spec: ServingSpec, trusted_types: Sequence[str]) -> Predictor:
    from skops.io import get_untrusted_types, load  # noqa: PLC0415

    try:
        untrusted = get_untrusted_types(file=str(path))
    except Exception as err:  # skops raises assorted errors for a malformed archive
        raise ArtifactError(f"{spec.file}: not a readable skops file: {err}") from err
    refused = sorted(set(untrusted) - set(trusted_types))
    if refused:
        raise ArtifactError(
            f"{spec.file}: holds types outside skops' defaults and the allow-list: {', '.join(refused)}",
        )
    try:
        estimator = load(str(path), trusted=list(untrusted))
    except Exception as err:
        raise ArtifactError(f"{spec.file}: skops cannot load it: {err}") from err
    predict_proba = getattr(estimator, "predict_proba", None)
    if predict_proba is None:
        raise ArtifactError(f"{spec.file}: the estimator has no predict_proba; only classifiers are served")

    def predict(rows: NDArray[np.float32]) -> NDArray[np.float64]:
        return np.asarray(predict_proba(rows), dtype=np.float64)

    return predict
