"""`pip install bastion` is the scanner and signing; registry, serving and S3 are extras.

The CLI is run in a real process in which every installed third-party package outside the core
set (and what the core set itself requires) cannot be imported, as on a machine where only the
base install was made: scanning and signing work, and the registry and gateway commands exit 2
naming the extra to install.
"""

from __future__ import annotations

import os
import pickle
import re
import subprocess
import sys
import tomllib
from pathlib import Path

from corpus.pickles import GLOBAL_REDUCE_OS_SYSTEM

ROOT = Path(__file__).resolve().parents[2]
CORE = ("click", "rich", "pydantic", "PyYAML", "cryptography", "Jinja2")
EXTRAS = {
    "lz4": {"lz4"},
    "registry": {"SQLAlchemy", "alembic", "psycopg", "fsspec", "fastapi", "uvicorn", "httpx"},
    "s3": {"s3fs"},
}

# Runs before the CLI: a meta-path finder refuses every distribution that the core set does not
# (transitively) require, and forgets whatever `site` had already imported from them.
BOOTSTRAP = """
import importlib.metadata as md, re, sys
from packaging_block import blocked_modules
blocked = blocked_modules({core!r})
class Blocker:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in blocked:
            raise ModuleNotFoundError(f"No module named {{name!r}} (blocked: not in the core install)", name=name)
        return None
sys.meta_path.insert(0, Blocker())
for loaded in [m for m in sys.modules if m.partition(".")[0] in blocked]:
    del sys.modules[loaded]
{body}
"""

BLOCK_MODULE = '''
import importlib.metadata as md
import re


def _name(requirement: str) -> str:
    return re.split(r"[ ;\\[<>=!~(]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def _needs(dist: md.Distribution) -> set[str]:
    """What `dist` requires without any extra (markers for this interpreter honoured)."""
    from packaging.requirements import Requirement

    out = set()
    for text in dist.requires or ():
        req = Requirement(text)
        if req.marker is None or req.marker.evaluate({"extra": ""}):
            out.add(req.name.lower().replace("_", "-"))
    return out


def blocked_modules(core: tuple[str, ...]) -> set[str]:
    allowed: set[str] = set()
    todo = [_name(c) for c in core]
    while todo:
        name = todo.pop()
        if name in allowed:
            continue
        allowed.add(name)
        try:
            todo.extend(_needs(md.distribution(name)))
        except md.PackageNotFoundError:
            pass
    blocked = set()
    for module, dists in md.packages_distributions().items():
        if module == "bastion" or module.startswith("_distutils"):
            continue
        if not {_name(d) for d in dists} & allowed:
            blocked.add(module)
    blocked.discard("packaging_block")
    return blocked
'''


def _run(tmp_path: Path, body: str, *args: str | Path) -> subprocess.CompletedProcess[str]:
    helper = tmp_path / "_block"
    helper.mkdir(exist_ok=True)
    (helper / "packaging_block.py").write_text(BLOCK_MODULE, encoding="utf-8")
    code = BOOTSTRAP.format(core=CORE, body=body)
    env = {k: v for k, v in os.environ.items() if not k.startswith("BASTION_")}
    env["PYTHONPATH"] = str(helper)
    return subprocess.run(
        [sys.executable, "-c", code, *map(str, args)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )


def _bastion(tmp_path: Path, *args: str | Path) -> subprocess.CompletedProcess[str]:
    return _run(tmp_path, "from bastion.cli.main import main\nsys.argv[0] = 'bastion'\nmain()", *args)


def test_the_blocker_really_blocks(tmp_path: Path) -> None:
    probe = "\n".join(
        [
            "import importlib",
            "for name in ('sqlalchemy', 'fastapi', 'numpy', 'onnxruntime', 'lz4', 's3fs', 'httpx'):",
            "    try:",
            "        importlib.import_module(name)",
            "    except ModuleNotFoundError as err:",
            "        assert 'blocked' in str(err), err",
            "    else:",
            "        raise SystemExit(f'{name} was importable')",
            "import click, rich, pydantic, yaml, cryptography, jinja2",
            "print('core ok')",
        ]
    )
    done = _run(tmp_path, probe)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "core ok"


def test_the_library_facade_imports_on_the_core_install(tmp_path: Path) -> None:
    body = "\n".join(
        [
            "import bastion, importlib",
            "for name in bastion.__all__:",
            "    getattr(bastion, name)",
            "for module in ('bastion.scan.api', 'bastion.sign.ossf', 'bastion.sign.keys', 'bastion.sign.certs',",
            "               'bastion.policy.load', 'bastion.render.scan_sarif', 'bastion.cli.main'):",
            "    importlib.import_module(module)",
            "print('facade ok')",
        ]
    )
    done = _run(tmp_path, body)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "facade ok"


def test_scan_and_signing_work_with_the_core_install_only(tmp_path: Path) -> None:
    (tmp_path / "benign.pkl").write_bytes(pickle.dumps({"weights": [0.25, 0.5]}, protocol=4))
    (tmp_path / "evil.pkl").write_bytes(GLOBAL_REDUCE_OS_SYSTEM)
    assert _bastion(tmp_path, "--help").returncode == 0

    benign = _bastion(tmp_path, "scan", "benign.pkl")
    assert benign.returncode == 0, benign.stdout + benign.stderr
    evil = _bastion(tmp_path, "scan", "evil.pkl", "--format", "json")
    assert evil.returncode == 1, evil.stdout + evil.stderr
    assert "pickle.dangerous-global" in evil.stdout

    model = tmp_path / "model"
    model.mkdir()
    (model / "weights.safetensors").write_bytes(b"\x00" * 64)
    (model / "config.json").write_text("{}", encoding="utf-8")
    for args in (("keygen", "release.key"), ("sign", model, "--key", "release.key")):
        done = _bastion(tmp_path, *args)
        assert done.returncode == 0, done.stderr
    verified = _bastion(tmp_path, "verify", model, "--key", "release.pub")
    assert verified.returncode == 0, verified.stderr
    assert "2 files" in verified.stdout

    (tmp_path / "policy.yaml").write_text("scan:\n  block_at: high\n", encoding="utf-8")
    checked = _bastion(tmp_path, "policy", "check", "policy.yaml")
    assert checked.returncode == 0, checked.stderr
    assert "policy.yaml: valid" in checked.stdout


def test_registry_and_serving_commands_name_the_extra_to_install(tmp_path: Path) -> None:
    for args, extra in (
        (("registry", "list"), "bastion[registry]"),
        (("audit", "verify"), "bastion[registry]"),
        (("serve", "--model", "fraud"), "bastion[serve]"),
        (("keys", "list"), "bastion[serve]"),
    ):
        done = _bastion(tmp_path, *args)
        assert done.returncode == 2, (args, done.stderr)
        assert done.stderr.startswith("error: "), (args, done.stderr)
        assert "Traceback" not in done.stderr
        hint = re.search(r"^hint: (.*)$", done.stderr, re.MULTILINE)
        assert hint is not None and extra in hint.group(1), (args, done.stderr)


def _names(requirements: list[str]) -> set[str]:
    return {re.split(r"[ ;\[<>=!~]", r, maxsplit=1)[0] for r in requirements}


def test_base_dependencies_are_exactly_the_core_set() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert _names(project["dependencies"]) == set(CORE)
    extras = {name: _names(reqs) for name, reqs in project["optional-dependencies"].items()}
    for name, expected in EXTRAS.items():
        assert extras[name] == expected, name
    assert extras["registry"] < extras["serve"]
    assert {"numpy", "onnxruntime", "skops", "joblib", "scipy", "orjson", "prometheus-client"} <= extras["serve"]
    assert project["optional-dependencies"]["all"] == ["bastion[lz4,registry,s3,serve]"]


def test_the_runtime_lock_covers_the_base_install_and_every_extra() -> None:
    """runtime.in (what the README's setup installs) is the union of the base and every extra."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    declared = _names(project["dependencies"])
    for name, reqs in project["optional-dependencies"].items():
        if name != "all":
            declared |= _names(reqs)
    lines = (ROOT / "requirements" / "runtime.in").read_text(encoding="utf-8").splitlines()
    locked = _names([line.split("#")[0].strip() for line in lines if line.split("#")[0].strip()])
    normal = lambda names: {n.lower().replace("_", "-") for n in names}  # noqa: E731
    missing, extra = normal(locked) - normal(declared), normal(declared) - normal(locked)
    assert not missing, f"in runtime.in but in no pyproject extra (add each to the extra that needs it): {sorted(missing)}"
    assert not extra, f"in pyproject but not in runtime.in (the README's setup would not install it): {sorted(extra)}"
