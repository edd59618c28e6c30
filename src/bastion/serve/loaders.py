"""The format loaders: the only place where Bastion loads a model file, and only to serve it.

A loader never opens a path: it deserialises the bytes a registry checkout read once and
checked (`CheckedOutVersion.read_checked`), so what is loaded is what was hashed, verified and
scanned. ONNX runs in ONNX Runtime and scikit-learn comes out of skops with an allow-list of
types: neither runs code from the file. A joblib file is a pickle, and loading it runs whatever
it names: it is loaded only where the serving stage's policy says `allow_pickle: true`, and only
when the checkout's scan of that file found nothing at all, not merely nothing blocking.
`load_promoted` (`bastion.serve.loader`) calls these only once the gate's serving checks passed.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from bastion.errors import ArtifactError
from bastion.registry.evidence import CheckedOutVersion
from bastion.serve.network import dense_network, tensors_of
from bastion.serve.spec import ServingSpec

Predictor = Callable[[NDArray[np.float32]], NDArray[np.float64]]  # rows -> class probabilities


@dataclass(frozen=True)
class FormatLoader:
    """The loader `spec.format` names, with what the serving stage's policy allows."""

    spec: ServingSpec
    trusted_types: Sequence[str]
    allow_pickle: bool
    stage: str

    def load(self, checked: CheckedOutVersion) -> Predictor:
        spec = self.spec
        if spec.file not in {f.path for f in checked.version.files}:
            raise ArtifactError(f"{spec.file}, named in serving.yaml, is not among the model's files")
        if spec.format == "joblib":
            self._require_clean_pickle(checked)
        return self.deserialise(checked.read_checked(spec.file))

    def deserialise(self, data: bytes) -> Predictor:
        """The predictor in `data`: bytes the caller has checked (`load` passes a checkout's)."""
        spec = self.spec
        if spec.format == "joblib" and not self.allow_pickle:
            raise ArtifactError(f"{spec.file} is a joblib pickle, and the policy does not allow pickle in {self.stage}")
        if spec.format == "torchscript":
            raise ArtifactError(
                f"{spec.file}: TorchScript is a program, run by PyTorch, which the gateway does not load",
                hint="Export the model to ONNX, or save its weights as safetensors and declare its layers.",
            )
        if spec.format == "onnx":
            return _load_onnx(data, spec)
        if spec.format == "safetensors":
            return dense_network(tensors_of(data, spec.file), spec.layers, spec.input.features, len(spec.labels), spec.file)
        if spec.format == "joblib":
            return _load_joblib(data, spec)
        return _load_skops(data, spec, self.trusted_types)

    def _require_clean_pickle(self, checked: CheckedOutVersion) -> None:
        spec = self.spec
        if not self.allow_pickle:
            raise ArtifactError(
                f"{spec.file} is a joblib pickle, and the policy does not allow pickle in {self.stage}",
                hint=f"Export the model with skops or to ONNX, or set gate.require.{self.stage}.allow_pickle: true.",
            )
        report = checked.evidence.scan
        target = checked.folder / spec.file
        scanned = [f for f in report.files if Path(f.path) == target] if report is not None else []
        if len(scanned) != 1 or scanned[0].findings:
            rules = sorted({f.rule_id for f in scanned[0].findings}) if len(scanned) == 1 else []
            raise ArtifactError(
                f"{spec.file} is a pickle and its scan is not clean ({', '.join(rules or ['incomplete scan'])}): not loaded"
            )


def _load_joblib(data: bytes, spec: ServingSpec) -> Predictor:
    import joblib  # noqa: PLC0415

    try:
        # The policy allows pickle here and the checkout's scan of these very bytes found
        # nothing in them: every global they name is a known-safe class or function.
        estimator = joblib.load(io.BytesIO(data))  # nosec B301
    except Exception as err:
        raise ArtifactError(f"{spec.file}: joblib cannot load it: {err}") from err
    return _classifier(estimator, spec)


def _load_onnx(data: bytes, spec: ServingSpec) -> Predictor:
    import onnxruntime  # noqa: PLC0415

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1  # requests are small; parallelism comes from serving many
    options.inter_op_num_threads = 1
    try:
        session = onnxruntime.InferenceSession(data, options, providers=["CPUExecutionProvider"])
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


def _load_skops(data: bytes, spec: ServingSpec, trusted_types: Sequence[str]) -> Predictor:
    from skops.io import get_untrusted_types, loads  # noqa: PLC0415

    try:
        untrusted = get_untrusted_types(data=data)
    except Exception as err:  # skops raises assorted errors for a malformed archive
        raise ArtifactError(f"{spec.file}: not a readable skops file: {err}") from err
    refused = sorted(set(untrusted) - set(trusted_types))
    if refused:
        raise ArtifactError(
            f"{spec.file}: holds types outside skops' defaults and the allow-list: {', '.join(refused)}",
        )
    try:
        estimator = loads(data, trusted=list(untrusted))
    except Exception as err:
        raise ArtifactError(f"{spec.file}: skops cannot load it: {err}") from err
    return _classifier(estimator, spec)


def _classifier(estimator: object, spec: ServingSpec) -> Predictor:
    predict_proba = getattr(estimator, "predict_proba", None)
    if predict_proba is None:
        raise ArtifactError(f"{spec.file}: the estimator has no predict_proba; only classifiers are served")

    def predict(rows: NDArray[np.float32]) -> NDArray[np.float64]:
        return np.asarray(predict_proba(rows), dtype=np.float64)

    return predict
