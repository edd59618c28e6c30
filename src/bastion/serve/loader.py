"""Load only what the registry's gate let into the serving stage, from the bytes that were checked.

The gateway trusts no `stage` column: anyone who can write to the database can set one. It asks
the registry for a checkout of the newest version recorded in the stage (`check_out_promoted`):
the bytes read once from the blob store, their recomputed digests, a fresh scan, the signature
verified with the gateway's trusted keys, and the proof of the stage (the promotion attestation
for this version's root digest and this stage, signed by the registry key the gateway was given,
and the audit entry that recorded it). What that evidence allows is the gate's to decide
(`gate.serving_refusals`); this module only consumes the decision, then hands the checked bytes
to a format loader (`bastion.serve.loaders`), which never opens a path.

One format is not safe: a joblib file is a pickle, and loading it runs whatever it names. It is
loaded only where the serving stage's policy says `allow_pickle: true`, and only when the scan of
the file found nothing at all (not merely nothing blocking).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from bastion.errors import BastionError, ConfigError, NotFound, VerificationError
from bastion.policy.schema import ScanPolicy
from bastion.registry import Principal, Registry
from bastion.registry.evidence import CheckedOutVersion
from bastion.registry.gate import serving_refusals
from bastion.serve.loaders import FormatLoader, Predictor
from bastion.serve.spec import SPEC_NAME, ServingSpec, parse_spec
from bastion.sign.keys import load_public_key

EXTRACTION_METRIC = "extraction_queries_95"  # the assessment metric account budgets are set from


@dataclass(frozen=True)
class ServedModel:
    """A verified, loaded model version and what it declared about its inputs and outputs."""

    name: str
    version: int
    root_digest: str
    spec: ServingSpec
    predict_proba: Predictor
    # Label-only queries a copy needs for 95 % agreement, from the version's assessment
    # (`bastion assess --only extraction`); None when it was not measured.
    extraction_queries_95: float | None = None

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
    registry_key: Path | None = None,
) -> ServedModel:
    """The newest version of `model` proven to be in `stage`, checked and loaded; LoadRefused says why not.

    Args:
        registry_key: the registry public key promotions must be signed with; default the
            registry folder's `registry.pub` (pinning a copy kept elsewhere is stronger).
    """
    if not trusted_keys:
        raise LoadRefused(model, ["no trusted signing key is configured; the gateway serves only signed models"])
    try:
        key = load_public_key(registry_key or registry.config.public_key)
    except BastionError as err:
        raise LoadRefused(model, [f"the registry key cannot be read: {err.message}"]) from err
    requirements = registry.policy.gate.requirements_for(stage)
    try:
        with registry.check_out_promoted(
            caller, model, stage, trusted_keys=trusted_keys, registry_key=key
        ) as checked:
            version = checked.version
            if version.layout != "folder":
                raise LoadRefused(version.ref, ["a served model is a folder holding the model file and serving.yaml"])
            refusals = serving_refusals(
                version, checked.evidence, checked.promotion, stage=stage, requirements=requirements,
                scan=scan_policy or registry.policy.scan,
            )
            if refusals:
                raise LoadRefused(version.ref, refusals)
            try:
                spec = _spec_of(checked)
                predict = FormatLoader(spec, trusted_types, requirements.allow_pickle, stage).load(checked)
            except BastionError as err:
                raise LoadRefused(version.ref, [err.message]) from err
            assessment = checked.evidence.assessment or {}
            cost = assessment.get(EXTRACTION_METRIC)
    except LoadRefused:
        raise
    except NotFound as err:
        raise LoadRefused(model, [err.message]) from err
    usable = cost is not None and math.isfinite(cost) and cost >= 1
    return ServedModel(version.model, version.number, version.root_digest, spec, predict, cost if usable else None)


def _spec_of(checked: CheckedOutVersion) -> ServingSpec:
    if SPEC_NAME not in {f.path for f in checked.version.files}:
        raise ConfigError(f"the model has no {SPEC_NAME}", hint="Add one beside the model file (see `bastion serve --help`).")
    try:
        raw = yaml.safe_load(checked.read_checked(SPEC_NAME))
    except yaml.YAMLError as err:
        raise ConfigError(f"{SPEC_NAME}: cannot read: {err}") from err
    return parse_spec(raw, SPEC_NAME)
