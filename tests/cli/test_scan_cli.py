"""`bastion scan` run as a user runs it: a real process, real files, exit codes and stdout.

Exit codes: 0 clean, 1 findings at or above --fail-on, 2 not fully analysed or a usage error.
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest

from corpus import pickles
from corpus.hang_guard import HANG_GUARD
from corpus.payloads import SystemCall

BENIGN = pickle.dumps({"weights": [0.25, 0.5], "name": "tiny"}, protocol=4)
MALICIOUS = pickle.dumps(SystemCall(), protocol=4)
TRUNCATED = BENIGN[:-3]


def bastion(*args: str | Path, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean_env = {k: v for k, v in os.environ.items() if not k.startswith("BASTION_")}
    clean_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "bastion.cli.main", *map(str, args)],
        cwd=cwd,
        env=clean_env,
        capture_output=True,
        text=True,
        timeout=HANG_GUARD,
        check=False,
    )


def write(folder: Path, name: str, data: bytes) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_help_lists_the_scan_command(tmp_path: Path) -> None:
    done = bastion("--help", cwd=tmp_path)
    assert done.returncode == 0
    assert "scan" in done.stdout


def test_benign_file_exits_0(tmp_path: Path) -> None:
    write(tmp_path, "model.pkl", BENIGN)
    done = bastion("scan", "model.pkl", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "PASS" in done.stdout


def test_malicious_file_exits_1_and_names_the_rule(tmp_path: Path) -> None:
    write(tmp_path, "model.pkl", MALICIOUS)
    done = bastion("scan", "model.pkl", cwd=tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "pickle.dangerous-global" in done.stdout


def test_truncated_file_exits_2(tmp_path: Path) -> None:
    write(tmp_path, "model.pkl", TRUNCATED)
    done = bastion("scan", "model.pkl", cwd=tmp_path)
    assert done.returncode == 2, done.stdout + done.stderr


def test_missing_path_exits_2_with_an_error_on_stderr(tmp_path: Path) -> None:
    done = bastion("scan", "does-not-exist.pt", cwd=tmp_path)
    assert done.returncode == 2
    assert "error:" in done.stderr
    assert "does-not-exist.pt" in done.stderr
    assert done.stdout == ""


@pytest.mark.parametrize("args", [("--format", "xml"), ("--fail-on", "severe")], ids=["bad-format", "bad-severity"])
def test_bad_option_value_exits_2(args: tuple[str, str], tmp_path: Path) -> None:
    write(tmp_path, "model.pkl", BENIGN)
    done = bastion("scan", "model.pkl", *args, cwd=tmp_path)
    assert done.returncode == 2
    assert args[1] in done.stderr


def test_json_output_is_machine_readable(tmp_path: Path) -> None:
    write(tmp_path, "model.pkl", MALICIOUS)
    done = bastion("scan", "model.pkl", "--format", "json", cwd=tmp_path)
    assert done.returncode == 1
    doc = json.loads(done.stdout)  # stdout carries the result and nothing else
    assert doc["schema"] == "bastion.scan/1"
    assert doc["verdict"] == "fail"
    [entry] = doc["files"]
    assert entry["path"].endswith("model.pkl")
    assert "pickle" in entry["formats"]
    assert entry["verdict"] == "fail"
    assert {"rule_id": "pickle.dangerous-global", "severity": "critical"}.items() <= entry["findings"][0].items()


def test_json_output_of_an_unanalysable_file_says_incomplete(tmp_path: Path) -> None:
    write(tmp_path, "model.pkl", TRUNCATED)
    done = bastion("scan", "model.pkl", "--format", "json", cwd=tmp_path)
    assert done.returncode == 2
    doc = json.loads(done.stdout)
    assert doc["verdict"] == "incomplete"
    assert doc["files"][0]["verdict"] == "incomplete"


def test_sarif_output_parses_as_sarif_2_1_0(tmp_path: Path) -> None:
    write(tmp_path, "model.pkl", MALICIOUS)
    done = bastion("scan", "model.pkl", "--format", "sarif", cwd=tmp_path)
    assert done.returncode == 1
    doc = json.loads(done.stdout)
    assert doc["version"] == "2.1.0"
    assert any(r["ruleId"] == "pickle.dangerous-global" for run in doc["runs"] for r in run["results"])


def test_fail_on_critical_lets_a_high_finding_through(tmp_path: Path) -> None:
    write(tmp_path, "model.pkl", pickles.REDUCE_UNKNOWN_FUNCTION)  # pickle.unknown-callable, HIGH
    assert bastion("scan", "model.pkl", cwd=tmp_path).returncode == 1
    done = bastion("scan", "model.pkl", "--fail-on", "critical", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "pickle.unknown-callable" in done.stdout  # still shown, just not blocking


def test_fail_on_flag_overrides_the_environment(tmp_path: Path) -> None:
    write(tmp_path, "model.pkl", pickles.REDUCE_UNKNOWN_FUNCTION)
    assert bastion("scan", "model.pkl", cwd=tmp_path, env={"BASTION_FAIL_ON": "critical"}).returncode == 0
    assert (
        bastion("scan", "model.pkl", "--fail-on", "high", cwd=tmp_path, env={"BASTION_FAIL_ON": "critical"}).returncode
        == 1
    )


def test_folder_is_scanned_recursively(tmp_path: Path) -> None:
    write(tmp_path, "models/README.md", b"# models\n")
    write(tmp_path, "models/good/model.pkl", BENIGN)
    write(tmp_path, "models/deep/er/still/weights.bin", MALICIOUS)
    done = bastion("scan", "models", "--format", "json", cwd=tmp_path)
    assert done.returncode == 1, done.stderr
    verdicts = {Path(f["path"]).name: f["verdict"] for f in json.loads(done.stdout)["files"]}
    assert verdicts == {"README.md": "pass", "model.pkl": "pass", "weights.bin": "fail"}


def test_folder_of_benign_files_exits_0(tmp_path: Path) -> None:
    write(tmp_path, "models/a.pkl", BENIGN)
    write(tmp_path, "models/sub/b.pkl", pickle.dumps([1, 2, 3]))
    assert bastion("scan", "models", cwd=tmp_path).returncode == 0


def test_several_workers_give_the_same_verdicts_as_one(tmp_path: Path) -> None:
    for i in range(70):  # past the size at which folders are scanned in parallel
        write(tmp_path, f"models/m{i:02d}.pkl", MALICIOUS if i == 42 else BENIGN)
    serial = bastion("scan", "models", "--format", "json", "-j", "1", cwd=tmp_path)
    parallel = bastion("scan", "models", "--format", "json", "-j", "2", cwd=tmp_path)
    assert serial.returncode == parallel.returncode == 1
    by_path = [{f["path"]: f["verdict"] for f in json.loads(out.stdout)["files"]} for out in (serial, parallel)]
    assert by_path[0] == by_path[1]
    assert [p for p, v in by_path[1].items() if v == "fail"] == [str(Path("models") / "m42.pkl")]


def test_policy_file_with_an_unknown_key_exits_2_and_names_the_key(tmp_path: Path) -> None:
    write(tmp_path, "model.pkl", BENIGN)
    (tmp_path / "policy.yaml").write_text("version: 1\nscan:\n  block_at: high\n  blok_at: low\n")
    done = bastion("scan", "model.pkl", "--policy", "policy.yaml", cwd=tmp_path)
    assert done.returncode == 2
    assert "blok_at" in done.stderr
    assert "error:" in done.stderr


def test_policy_file_block_at_medium_blocks_an_unknown_class(tmp_path: Path) -> None:
    write(tmp_path, "model.pkl", pickles.NEWOBJ_UNKNOWN_CLASS)  # pickle.unknown-class, MEDIUM
    (tmp_path / "policy.yaml").write_text("version: 1\nscan:\n  block_at: medium\n")
    assert bastion("scan", "model.pkl", cwd=tmp_path).returncode == 0
    assert bastion("scan", "model.pkl", "--policy", "policy.yaml", cwd=tmp_path).returncode == 1


def test_policy_file_allow_list_unblocks_a_named_callable(tmp_path: Path) -> None:
    write(tmp_path, "model.pkl", pickles.REDUCE_UNKNOWN_FUNCTION)
    (tmp_path / "policy.yaml").write_text("version: 1\nscan:\n  allow_globals: [mymod.helper]\n")
    assert bastion("scan", "model.pkl", "--policy", "policy.yaml", cwd=tmp_path).returncode == 0


def test_unwritable_output_path_is_a_clear_usage_error(tmp_path: Path) -> None:
    model = tmp_path / "m.pkl"
    model.write_bytes(b"\x80\x04N.")
    done = subprocess.run(
        [sys.executable, "-m", "bastion.cli.main", "scan", str(model), "-o", str(tmp_path / "no" / "such" / "r.json")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 2
    assert "cannot write the report" in done.stderr and "Traceback" not in done.stderr


def test_file_behind_a_symlink_in_a_folder_is_scanned(tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere.bin"
    outside.write_bytes(pickle.dumps(SystemCall(), protocol=4))
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "weights.bin").symlink_to(outside)
    done = subprocess.run(
        [sys.executable, "-m", "bastion.cli.main", "scan", str(folder)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 1, done.stdout + done.stderr


def test_explain_prints_the_catalogue_entry(tmp_path: Path) -> None:
    done = bastion("scan", "--explain", "pickle.dangerous-global", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    first, summary = done.stdout.splitlines()[:2]
    assert first.startswith("pickle.dangerous-global") and "[critical]" in first
    assert summary == "Imports a function that runs code or reaches the system"
    assert "Do not load the file" in done.stdout


def test_explain_as_json_is_machine_readable(tmp_path: Path) -> None:
    done = bastion("scan", "--explain", "scan.incomplete", "--format", "json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    entry = json.loads(done.stdout)
    assert entry["rule_id"] == "scan.incomplete" and entry["incomplete"] is True and entry["severity"] == "high"


def test_explain_of_an_unknown_rule_exits_2_naming_close_matches(tmp_path: Path) -> None:
    done = bastion("scan", "--explain", "pickle.dangerous-globl", cwd=tmp_path)
    assert done.returncode == 2
    assert done.stdout == ""
    assert "unknown rule id 'pickle.dangerous-globl'" in done.stderr
    assert "pickle.dangerous-global" in done.stderr.split("hint:", 1)[1]


def test_scan_without_paths_is_a_usage_error(tmp_path: Path) -> None:
    done = bastion("scan", cwd=tmp_path)
    assert done.returncode == 2
    assert "PATHS" in done.stderr
