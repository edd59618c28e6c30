"""Read a policy file: flag > BASTION_* variable > file > default."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from bastion.errors import ConfigError
from bastion.findings import Severity
from bastion.policy.schema import Policy


def load_policy(path: Path | None = None, *, block_at: str | None = None) -> Policy:
    """The policy in force.

    Args:
        path: a YAML policy file, or None for `BASTION_POLICY` or the defaults.
        block_at: a severity given on the command line, overriding the file.

    Raises:
        ConfigError: the file cannot be read, is not YAML, or has a bad or unknown key.
    """
    source = path or (Path(os.environ["BASTION_POLICY"]) if os.environ.get("BASTION_POLICY") else None)
    policy = Policy()
    if source is not None:
        import yaml  # noqa: PLC0415  # YAML and pydantic only when a file is given
        from pydantic import ValidationError  # noqa: PLC0415

        from bastion.policy.file import PolicyFile  # noqa: PLC0415

        try:
            raw = yaml.safe_load(source.read_text(encoding="utf-8"))
        except OSError as err:
            raise ConfigError(f"{source}: cannot read policy: {err.strerror}", hint="Check the --policy path.") from err
        except yaml.YAMLError as err:
            raise ConfigError(f"{source}: not valid YAML: {err}", hint="Fix the YAML syntax.") from err
        try:
            policy = PolicyFile.model_validate(raw or {}).to_policy(source.parent)
        except ValidationError as err:
            problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in err.errors())
            raise ConfigError(f"{source}: {problems}", hint="Fix or remove the named keys.") from err
    chosen = block_at or os.environ.get("BASTION_FAIL_ON")
    if chosen:
        policy = dataclasses.replace(policy, scan=dataclasses.replace(policy.scan, block_at=Severity.parse(chosen)))
    return policy
