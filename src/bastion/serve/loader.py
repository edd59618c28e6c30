"""Load only what the registry promoted, re-verified at load, through a loader that runs no code.

A model is served when: its newest version in the serving stage is found; its stored bytes
still match the digests recorded at registration; its signature verifies with a trusted key;
a fresh scan is clean; its `serving.yaml` is valid; and its format has a safe loader (ONNX
through ONNX Runtime, scikit-learn through skops with an allow-list of types). Anything else
is refused with the reason, and nothing of it is loaded.

One format is not safe: a joblib file is a pickle, and loading it runs whatever it names. It is
loaded only where the serving stage's policy says `allow_pickle: true`, and only when a scan of
the file finds nothing at all (not merely nothing blocking), after every check above.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bastion.errors import BastionError, NotFound, VerificationError
from bastion.policy.schema import ScanPolicy
from bastion.registry import Principal, Registry
from bastion.registry.gate import check_scan, check_signature, check_stored_bytes
from bastion.serve.loaders import FormatLoader, Predictor
from bastion.serve.spec import ServingSpec, load_spec


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
        allow_pickle = registry.policy.gate.requirements_for(stage).allow_pickle
        try:
            spec = load_spec(fetched.model_path)
            loader = FormatLoader(spec, trusted_types, scan_policy or registry.policy.scan, allow_pickle, stage)
            predict = loader.load(fetched.model_path / spec.file)
        except BastionError as err:
            raise LoadRefused(version.ref, [err.message]) from err
    return ServedModel(version.model, version.number, version.root_digest, spec, predict)
