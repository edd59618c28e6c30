"""Lazy iterator carriers are calls of their function argument (issue 11, class 2).

`map`, `filter`, `itertools.starmap` and their family call the function they carry as soon
as anything consumes them (list, dict, tuple, BUILD, a for loop), so building one is judged
as calling its function, by REDUCE, NEWOBJ or NEWOBJ_EX alike.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from bastion.findings import Severity
from bastion.scan.api import scan_bytes
from corpus.expect import assert_fails_with, assert_passes, describe
from corpus.spec_streams import (
    build,
    call,
    dct,
    g,
    load_in_subprocess,
    lst,
    newobj,
    newobj_ex,
    s,
    stream,
    touch_marker,
    tup,
)

ITEMS = lst(s("a"), s("b"))


def _positional(module: str, name: str, first: bool) -> Callable[[bytes, str], bytes]:
    def make(func: bytes, how: str) -> bytes:
        args = (func, ITEMS) if first else (ITEMS, func)
        carrier = g(module, name)
        return newobj(carrier, *args) if how == "newobj" else call(carrier, *args)

    return make


def _keyword(module: str, name: str, key: str) -> Callable[[bytes, str], bytes]:
    def make(func: bytes, how: str) -> bytes:
        return newobj_ex(g(module, name), (ITEMS,), {key: func})

    return make


CARRIERS: dict[str, Callable[[bytes, str], bytes]] = {
    "map": _positional("builtins", "map", True),
    "filter": _positional("builtins", "filter", True),
    "starmap": _positional("itertools", "starmap", True),
    "accumulate": _positional("itertools", "accumulate", False),
    "takewhile": _positional("itertools", "takewhile", True),
    "dropwhile": _positional("itertools", "dropwhile", True),
    "filterfalse": _positional("itertools", "filterfalse", True),
    "reduce": _positional("functools", "reduce", True),
    "groupby-key": _keyword("itertools", "groupby", "key"),
    "accumulate-func-keyword": _keyword("itertools", "accumulate", "func"),
}
CONSUMERS: dict[str, Callable[[bytes], bytes]] = {
    "list": lambda it: call(g("builtins", "list"), it),
    "dict": lambda it: call(g("builtins", "dict"), it),
    "tuple": lambda it: call(g("builtins", "tuple"), it),
    "build": lambda it: build(newobj(g("argparse", "Namespace")), dct({"items": call(g("builtins", "list"), it)})),
}


@pytest.mark.parametrize("how", ["reduce", "newobj"])
@pytest.mark.parametrize("consumer", list(CONSUMERS))
@pytest.mark.parametrize("carrier", list(CARRIERS))
def test_carrier_of_an_unknown_function_is_a_call(carrier: str, consumer: str, how: str) -> None:
    body = CONSUMERS[consumer](CARRIERS[carrier](g("mymod", "helper"), how))
    report = scan_bytes(stream(body), "carrier.pkl")
    assert_fails_with(report, "pickle.unknown-callable")
    assert any(f.evidence == "mymod.helper" and f.severity >= Severity.HIGH for f in report.findings)


@pytest.mark.parametrize("carrier", list(CARRIERS))
def test_carrier_of_a_dangerous_function_is_critical(carrier: str) -> None:
    report = scan_bytes(stream(CONSUMERS["list"](CARRIERS[carrier](g("os", "system"), "newobj"))), "c.pkl")
    assert_fails_with(report, "pickle.dangerous-global")


@pytest.mark.parametrize("carrier", list(CARRIERS))
def test_carrier_of_a_computed_function_is_a_call_chain(carrier: str) -> None:
    made = call(g("mymod", "factory"))
    report = scan_bytes(stream(CONSUMERS["list"](CARRIERS[carrier](made, "reduce"))), "c.pkl")
    assert_fails_with(report, "pickle.call-chain")


@pytest.mark.parametrize("carrier", ["map", "starmap", "filter"])
def test_carrier_of_a_partial_is_judged_by_what_the_partial_wraps(carrier: str) -> None:
    wrapped = call(g("functools", "partial"), g("mymod", "helper"))
    report = scan_bytes(stream(CONSUMERS["list"](CARRIERS[carrier](wrapped, "reduce"))), "c.pkl")
    assert_fails_with(report, "pickle.unknown-callable")


def test_carrier_of_an_unpickling_sink_cannot_be_verified() -> None:
    sink = g("torch.storage", "_load_from_bytes")
    report = scan_bytes(stream(CONSUMERS["list"](CARRIERS["map"](sink, "reduce"))), "c.pkl")
    assert_fails_with(report, "pickle.unverified-arguments")


@pytest.mark.parametrize("builtin", ["sorted", "min", "max"])
def test_key_bound_through_a_partial_is_a_call(builtin: str) -> None:
    partial = call(g("functools", "partial"), g("builtins", builtin))
    data = stream(build(partial, tup(g("builtins", builtin), tup(), dct({"key": g("mymod", "helper")}), b"N")))
    assert_fails_with(scan_bytes(data, "key.pkl"), "pickle.unknown-callable")


def test_iter_with_a_sentinel_calls_its_callable() -> None:
    data = stream(call(g("builtins", "list"), call(g("builtins", "iter"), g("mymod", "helper"), b"N")))
    assert_fails_with(scan_bytes(data, "iter.pkl"), "pickle.unknown-callable")


def test_iter_without_a_sentinel_only_iterates() -> None:
    assert_passes(scan_bytes(stream(call(g("builtins", "list"), call(g("builtins", "iter"), ITEMS))), "iter.pkl"))


@pytest.mark.parametrize("carrier", ["map", "starmap", "filter"])
def test_carrier_of_an_allowed_inert_function_passes(carrier: str) -> None:
    func = g("builtins", "str") if carrier != "starmap" else g("builtins", "int")
    items = lst(s("1")) if carrier != "starmap" else lst(tup(s("7")))
    body = call(
        g("builtins", "list"), call(g("builtins" if carrier != "starmap" else "itertools", carrier), func, items)
    )
    report = scan_bytes(stream(body), "ok.pkl")
    assert_passes(report)
    assert not report.findings, describe(report.findings)


def test_map_carrier_really_runs_under_the_stock_loader(tmp_path: Path) -> None:
    marker = tmp_path / "map-ran"
    data = stream(touch_marker(marker))
    assert_fails_with(scan_bytes(data, "map.pkl"), "pickle.attribute-path")
    done = load_in_subprocess(data, tmp_path)
    assert done.returncode == 0, done.stderr
    assert marker.exists()


def test_starmap_consumed_by_build_really_runs_under_the_stock_loader(tmp_path: Path) -> None:
    marker = tmp_path / "starmap-ran"
    path = call(g("pathlib", "PosixPath"), s(str(marker)))
    starmap = newobj(g("itertools", "starmap"), g("pathlib", "Path.touch"), lst(tup(path)))
    data = stream(build(newobj(g("argparse", "Namespace")), dct({"x": call(g("builtins", "tuple"), starmap)})))
    assert_fails_with(scan_bytes(data, "starmap.pkl"), "pickle.attribute-path")
    done = load_in_subprocess(data, tmp_path)
    assert done.returncode == 0, done.stderr
    assert marker.exists()


FROZENSET = b"\x91"


def _frozenset(*items: bytes) -> bytes:
    return b"(" + b"".join(items) + FROZENSET


@pytest.mark.parametrize("how", ["reduce", "newobj"])
def test_arguments_given_as_a_set_are_spread_into_every_position(how: str) -> None:
    """The pure-Python reader (joblib's) calls `func(*args)` and `cls.__new__(cls, *args)` with
    whatever args is: a frozenset is spread too, in an order that string hashing fixes only when
    the file is loaded. Every item may land in every position, so each is checked in each."""
    args = _frozenset(g("mymod", "helper"), tup(s("x")))
    carrier = g("builtins" if how == "reduce" else "itertools", "map" if how == "reduce" else "starmap")
    opcode = b"R" if how == "reduce" else b"\x81"
    data = stream(call(g("builtins", "list"), carrier + args + opcode))
    assert_fails_with(scan_bytes(data, "set-args.pkl"), "pickle.unknown-callable")


def test_a_set_of_plain_data_as_arguments_passes() -> None:
    data = stream(
        call(g("builtins", "list"), g("builtins", "map") + _frozenset(g("builtins", "str"), tup(s("x"))) + b"R")
    )
    assert_passes(scan_bytes(data, "set-args.pkl"))


def test_set_spread_really_reaches_the_callable_under_the_pure_python_reader(tmp_path: Path) -> None:
    """Proof for the rule above: pickle._loads spreads a frozenset into map(...); with string
    hashing fixed, map(Path.touch, (path,)) runs. The C reader refuses non-tuple arguments."""
    marker = tmp_path / "set-ran"
    path = call(g("pathlib", "PosixPath"), s(str(marker)))
    data = stream(
        call(g("builtins", "list"), g("builtins", "map") + _frozenset(g("pathlib", "Path.touch"), tup(path)) + b"R")
    )
    assert_fails_with(scan_bytes(data, "set.pkl"), "pickle.attribute-path")
    (tmp_path / "p.bin").write_bytes(data)
    code = "import pickle,sys; pickle._loads(open(sys.argv[1],'rb').read())"
    ran = []
    for seed in range(64):  # one of the two orders runs the payload; which one, hashing decides
        done = subprocess.run(
            [sys.executable, "-c", code, str(tmp_path / "p.bin")],
            env={**os.environ, "PYTHONHASHSEED": str(seed)},
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        ran.append(done.returncode == 0)
        if marker.exists():
            break
    assert marker.exists(), ran
