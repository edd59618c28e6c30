"""REDUCE of a class is judged by what the class is known to be (issue 11), and only that.

An attacker who reads `known_classes` will call a known Enum with a payload, call a name that
merely looks like an Enum, or reach a known class through another callee. Each of those must
still be flagged; only the exact inert shapes pass: one literal member value for an Enum, a
literal sequence for a struct sequence, literal numbers of the recorded arity for a compiled
class. The data itself is checked against the installed libraries.
"""

from __future__ import annotations

import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bastion.findings import Severity
from bastion.scan.api import scan_bytes
from bastion.scan.pickle import known_classes
from corpus.expect import assert_fails_with

ROOT = Path(__file__).resolve().parents[3]
ENUM = ("transformers.trainer_utils", "IntervalStrategy")
FSDP_ENUM = ("torch.distributed.fsdp.api", "ShardingStrategy")


# -- hand-assembled protocol-2 streams -----------------------------------------------------------


def _global(module: str, name: str) -> bytes:
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def _str(text: str) -> bytes:
    raw = text.encode()
    return b"X" + struct.pack("<I", len(raw)) + raw


def _int(value: int) -> bytes:
    return b"J" + struct.pack("<i", value)


def _float(value: float) -> bytes:
    return b"G" + struct.pack(">d", value)


def _call(func: bytes, *args: bytes) -> bytes:
    return func + b"(" + b"".join(args) + b"tR"


def _stream(body: bytes) -> bytes:
    return b"\x80\x02" + body + b"."


def _alarms(data: bytes) -> list[str]:
    report = scan_bytes(_stream(data), "case.pkl")
    return [f"{f.rule_id} {f.evidence}" for f in report.findings if f.severity >= Severity.LOW]


def _fails(data: bytes, *rules: str) -> None:
    assert_fails_with(scan_bytes(_stream(data), "case.pkl"), *rules)


# -- what passes ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(_call(_global(*ENUM), _str("steps")), id="str-enum-member"),
        pytest.param(_call(_global(*FSDP_ENUM), _int(1)), id="int-enum-member"),
        pytest.param(_call(_global("re", "RegexFlag"), _int(2)), id="stdlib-flag-member"),
        pytest.param(_call(_global("re", "RegexFlag"), _int(10)), id="stdlib-flag-composite"),
        pytest.param(_call(_global("torch.return_types", "max"), b"(" + _int(1) + _int(2) + b"t}"), id="structseq"),
        pytest.param(_call(_global("sklearn.linear_model._sgd_fast", "Hinge"), _float(1.0)), id="sgd-loss"),
        pytest.param(_call(_global("sklearn._loss._loss", "CyHuberLoss"), _float(0.9)), id="cython-loss"),
        pytest.param(_call(_global("types", "SimpleNamespace")) + b"}" + _str("a") + _int(1) + b"sb",
                     id="simple-namespace"),
        pytest.param(_call(_global("__builtin__", "xrange"), _int(3)), id="py2-range"),
        pytest.param(_global("pandas", "NA"), id="pandas-singleton-mention"),
    ],
)
def test_known_inert_shape_raises_no_alarm(body: bytes) -> None:
    assert _alarms(body) == []


# -- what an adaptive attacker tries -----------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(_call(_global("transformers.trainer_utils", "NotAnEnum"), _str("steps")), id="name-not-in-data"),
        pytest.param(_call(_global("evil", "IntervalStrategy"), _str("steps")), id="enum-name-other-module"),
        pytest.param(_call(_global(*ENUM), _str("not a member")), id="non-member-reaches-missing"),
        pytest.param(_call(_global(*FSDP_ENUM), _int(99)), id="int-non-member-of-a-plain-enum"),
        pytest.param(_call(_global("re", "RegexFlag"), _str("10")), id="flag-with-a-string"),
        pytest.param(_call(_global("re", "RegexFlag"), b"\x8a\x09" + b"\x01" * 9), id="flag-with-a-huge-int"),
        pytest.param(_call(_global(*ENUM), _global("collections", "OrderedDict")), id="global-argument"),
        pytest.param(_call(_global(*ENUM), _call(_global("builtins", "str"), _str("steps"))), id="computed-argument"),
        pytest.param(_call(_global(*ENUM), _str("steps"), _str("x y")), id="two-arguments-functional-api"),
        pytest.param(_call(_global(*ENUM)), id="no-argument"),
        pytest.param(_global(*ENUM) + b")R", id="empty-tuple"),
        pytest.param(_global(*ENUM) + _str("steps") + b"R", id="arguments-not-a-tuple"),
        pytest.param(
            _global(*ENUM) + b"q\x00(" + _str("steps") + b"tR0h\x00(" + _str("payload") + b"tR",
            id="memoised-class-called-twice",
        ),
        pytest.param(_call(_global("collections", "defaultdict"), _global(*ENUM)), id="call-implied-by-another-callee"),
        pytest.param(_call(_global("accelerate.state", "PartialState")), id="plain-class-called"),
        pytest.param(_call(_global("pandas", "NA")), id="singleton-called"),
    ],
)
def test_known_class_misused_is_still_flagged(body: bytes) -> None:
    _fails(body, "pickle.unknown-callable", "pickle.call-chain", "pickle.attribute-path")


def test_enum_rebuilt_by_newobj_is_not_taken_for_a_lookup() -> None:
    # NEWOBJ runs the same lookup with arguments the rules do not see: judged as before.
    body = _global(*FSDP_ENUM) + b"(" + _int(1) + b"t\x81"
    assert "pickle.unknown-class torch.distributed.fsdp.api.ShardingStrategy" in _alarms(body)


@pytest.mark.parametrize("name", ["FunctionType", "CodeType", "MethodType", "ModuleType"])
def test_the_rest_of_types_stays_dangerous(name: str) -> None:
    _fails(_call(_global("types", name), _str("x")), "pickle.dangerous-global")


def test_python2_name_mapping_cannot_launder_a_dangerous_name() -> None:
    # CPython maps `__builtin__ intern` to `sys.intern` (fix_imports): the name it imports decides.
    _fails(_call(_global("__builtin__", "intern"), _str("x")), "pickle.dangerous-global")


# -- the data is what the installed libraries say -------------------------------------------------


def _run_generator(*flags: str) -> subprocess.CompletedProcess[str]:
    # A fresh process: libraries patch classes while they train (Lightning wraps samplers'
    # __setattr__), so the kinds are read as a checkpoint's loader would find them.
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_known_classes.py"), *flags],
        capture_output=True,
        text=True,
        check=False,
        env={"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin", "HOME": str(Path.home())},
        timeout=1800,
    )


def test_known_classes_say_which_library_versions_they_came_from() -> None:
    assert {"python", "torch", "transformers", "accelerate", "scikit-learn", "numpy", "pandas"} <= set(
        known_classes.GENERATED_FROM
    )
    assert list(known_classes.ENUMS) == sorted(known_classes.ENUMS)


def test_every_recorded_name_still_has_its_kind_in_the_installed_libraries() -> None:
    result = _run_generator("--verify")
    assert result.returncode == 0, "re-run scripts/gen_known_classes.py:\n" + result.stderr[-3000:]


@pytest.mark.slow
def test_generator_reproduces_the_data_from_the_installed_libraries() -> None:
    result = _run_generator("--check")
    assert result.returncode == 0, result.stderr[-2000:]


# -- the generator's reading of enum's code paths ----------------------------------------------------


def _generator_module() -> Any:
    import importlib.util  # noqa: PLC0415

    spec = importlib.util.spec_from_file_location("gen_known_classes", ROOT / "scripts" / "gen_known_classes.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("gen_known_classes", module)  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_generator_records_member_values_and_leaves_out_enums_whose_lookup_runs_code() -> None:
    import enum  # noqa: PLC0415

    gen = _generator_module()

    class Plain(str, enum.Enum):  # noqa: UP042  # a str-mixin Enum, as transformers writes them
        A = "a"

    class CustomMissing(str, enum.Enum):  # noqa: UP042  # transformers' ExplicitEnum shape
        A = "a"

        @classmethod
        def _missing_(cls, value: object) -> None:
            raise ValueError(value)  # runs only for a value no member has

    class CallingMeta(enum.EnumType):
        def __call__(cls, *args: object, **kwargs: object) -> object:  # type: ignore[override]  # the point
            return super().__call__(*args, **kwargs)

    class Called(enum.Enum, metaclass=CallingMeta):
        A = 1

    class Replaced(enum.Enum):
        A = 1

    Replaced.__new__ = lambda cls, value: object()  # type: ignore[assignment,method-assign]  # the point

    class ObjectValued(enum.Enum):
        A = object()

    assert gen._enum_values(Plain) == ("a",)
    assert gen._enum_values(CustomMissing) == ("a",)
    assert gen._enum_values(Called) is None
    assert gen._enum_values(Replaced) is None
    assert gen._enum_values(ObjectValued) is None
