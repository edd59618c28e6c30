"""Where a registry keeps its metadata, blobs, key and policy: `registry.yaml` in its home folder.

```yaml
database: sqlite:///registry.db        # or postgresql://user@host/db
blobs: blobs                           # a folder, or s3://bucket/prefix
blob_options: {endpoint_url: http://127.0.0.1:9000}   # fsspec storage options (no secrets here)
policy: policy.yaml                    # stages and what each requires
signing_key: registry.key              # signs audit checkpoints and promotion attestations
audit_witness: s3://audit-bucket/bastion   # where signed audit heads are appended (default:
                                       # audit-witness/ in this folder); keep it where the
                                       # registry's own writers cannot delete (S3 object lock)
audit_witness_options: {}              # fsspec storage options for the witness (no secrets)
```

Relative paths are relative to the home folder. `BASTION_REGISTRY_DATABASE`,
`BASTION_REGISTRY_BLOBS` and `BASTION_REGISTRY_AUDIT_WITNESS` override the file, so secrets in
URLs can stay in the environment; S3 credentials come from the usual AWS variables.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, ValidationError

from bastion.errors import ConfigError
from bastion.sign.keys import generate_key, save_keypair

if TYPE_CHECKING:
    from bastion.audit.witness import Witness

CONFIG_NAME = "registry.yaml"
HOME_MODE = 0o700
DEFAULT_POLICY = """\
# What each stage requires; see `bastion registry --help`. Every promotion also re-scans
# the stored bytes and re-checks their digests, whatever this file says.
version: 1
scan:
  block_at: high
gate:
  stages: [dev, staging, production]
  separation_of_duties: true
  require:
    staging:
      scan_block_at: high
    production:
      scan_block_at: medium
      approvals: 1
"""


class _ConfigFile(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    database: str = "sqlite:///registry.db"
    blobs: str = "blobs"
    blob_options: dict[str, Any] = {}
    policy: str = "policy.yaml"
    signing_key: str = "registry.key"
    audit_witness: str = "audit-witness"
    audit_witness_options: dict[str, Any] = {}


@dataclass(frozen=True)
class RegistryConfig:
    """A registry's settings, every path resolved."""

    home: Path
    database: str
    blobs: str
    blob_options: dict[str, Any] = field(default_factory=dict)
    policy: Path = Path("policy.yaml")
    signing_key: Path = Path("registry.key")
    audit_witness: str = ""  # a folder or an fsspec URL; "" when none is set
    audit_witness_options: dict[str, Any] = field(default_factory=dict)

    @property
    def public_key(self) -> Path:
        return self.signing_key.with_suffix(".pub")

    def open_witness(self) -> Witness | None:
        """The audit witness the registry and its gateways append signed heads to."""
        from bastion.audit.witness import Witness  # noqa: PLC0415

        return Witness(self.audit_witness, self.audit_witness_options) if self.audit_witness else None


def _resolve(home: Path, raw: _ConfigFile) -> RegistryConfig:
    database = os.environ.get("BASTION_REGISTRY_DATABASE") or raw.database
    if database.startswith("sqlite:///") and not database.startswith("sqlite:////"):
        relative = database.removeprefix("sqlite:///")
        if relative and relative != ":memory:":
            database = f"sqlite:///{(home / relative).resolve()}"
    blobs = os.environ.get("BASTION_REGISTRY_BLOBS") or raw.blobs
    if "://" not in blobs:
        blobs = str((home / blobs).resolve())
    witness = os.environ.get("BASTION_REGISTRY_AUDIT_WITNESS") or raw.audit_witness
    if witness and "://" not in witness:
        witness = str((home / witness).resolve())
    return RegistryConfig(
        home=home,
        database=database,
        blobs=blobs,
        blob_options=dict(raw.blob_options),
        policy=(home / raw.policy).resolve(),
        signing_key=(home / raw.signing_key).resolve(),
        audit_witness=witness,
        audit_witness_options=dict(raw.audit_witness_options),
    )


def load_config(home: Path) -> RegistryConfig:
    """Read `home/registry.yaml`; ConfigError names the bad key."""
    import yaml  # noqa: PLC0415

    path = home / CONFIG_NAME
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError as err:
        raise ConfigError(
            f"{home} is not a registry (no {CONFIG_NAME})",
            hint="Create one with `bastion registry init DIR`, or point --registry / BASTION_REGISTRY at it.",
        ) from err
    except (OSError, yaml.YAMLError) as err:
        raise ConfigError(f"{path}: cannot read: {err}") from err
    try:
        parsed = _ConfigFile.model_validate(raw)
    except ValidationError as err:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in err.errors())
        raise ConfigError(f"{path}: {problems}", hint="Fix or remove the named keys.") from err
    return _resolve(home.resolve(), parsed)


def init_registry(
    home: Path,
    *,
    database: str | None = None,
    blobs: str | None = None,
    blob_options: dict[str, Any] | None = None,
    audit_witness: str | None = None,
) -> RegistryConfig:
    """Create the home folder, its config, a default policy and the registry's signing key."""
    import yaml  # noqa: PLC0415

    home.mkdir(mode=HOME_MODE, parents=True, exist_ok=True)
    path = home / CONFIG_NAME
    if path.exists():
        raise ConfigError(f"{home} already holds a registry", hint="Use it as it is, or pick an empty folder.")
    # The folder holds the database, the blobs and the signing key: no one else may list or read it.
    home.chmod(HOME_MODE)
    settings: dict[str, Any] = {}
    if database:
        settings["database"] = database
    if blobs:
        settings["blobs"] = blobs
    if blob_options:
        settings["blob_options"] = blob_options
    if audit_witness:
        settings["audit_witness"] = audit_witness
    raw = _ConfigFile.model_validate(settings)
    path.write_text(yaml.safe_dump(raw.model_dump(), sort_keys=False), encoding="utf-8")
    config = _resolve(home.resolve(), raw)
    if not config.policy.exists():
        config.policy.write_text(DEFAULT_POLICY, encoding="utf-8")
    if not config.signing_key.exists():
        save_keypair(generate_key("ed25519"), config.signing_key)
    return config
