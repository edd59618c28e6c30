"""Allowed callables are checked by what they do with each argument (issue 11, class 1).

Benign files come from the real libraries and must pass; each malicious variant hands an
allowed callable something it calls, instantiates, applies as state or binds for later.
"""

from __future__ import annotations

import collections
import functools
import io
import pickle
import zoneinfo
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from bastion.findings import Severity
from bastion.scan.api import scan_bytes
from corpus.expect import assert_fails_with, assert_passes, describe, rules
from corpus.spec_streams import (
    build,
    call,
    dct,
    g,
    i,
    load_in_subprocess,
    lst,
    newobj,
    newobj_ex,
    odict,
    s,
    stream,
    tup,
)

PROTOCOLS = range(pickle.HIGHEST_PROTOCOL + 1)
UNKNOWN = g("mymod", "helper")
SYSTEM = g("os", "system")


class TaggedTensor(torch.Tensor):
    """A tensor subclass: torch.save writes it with _rebuild_from_type_v2."""


def _torch_bytes(obj: object) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def _severity(report: object, rule: str) -> Severity:
    return max(f.severity for f in report.findings if f.rule_id == rule)  # type: ignore[attr-defined]


# -- real files that use these callables must pass ------------------------------------------
def test_torch_save_of_a_tensor_subclass_passes() -> None:
    report = scan_bytes(_torch_bytes({"t": torch.ones(3).as_subclass(TaggedTensor)}), "sub.pt")
    assert_passes(report)
    # The subclass is rebuilt, not called: reported as an unknown class below the threshold.
    assert "pickle.unknown-class" in rules(report), describe(report.findings)


def test_parameter_with_python_state_passes() -> None:
    param = torch.nn.Parameter(torch.ones(2))
    param.note = "frozen"  # type: ignore[attr-defined]
    data = _torch_bytes({"p": param})
    assert b"_rebuild_parameter_with_state" in data
    assert_passes(scan_bytes(data, "param.pt"))


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("kind", ["RandomState", "Generator"])
def test_numpy_random_state_pickled_by_numpy_passes(kind: str, protocol: int) -> None:
    obj = np.random.RandomState(7) if kind == "RandomState" else np.random.default_rng(7)
    assert_passes(scan_bytes(pickle.dumps(obj, protocol=protocol), "rng.pkl"))


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_zoneinfo_as_cpython_writes_it_passes(protocol: int) -> None:
    data = pickle.dumps({"tz": zoneinfo.ZoneInfo("Europe/Paris")}, protocol=protocol)
    assert b"getattr" in data
    assert_passes(scan_bytes(data, "tz.pkl"))


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize(
    "activation",
    [
        functools.partial(F.gelu, approximate="tanh"),
        functools.partial(F.relu, inplace=True),
        functools.partial(F.softmax, dim=-1),
        functools.partial(F.silu),
        functools.partial(torch.tanh),
    ],
    ids=["gelu", "relu", "softmax", "silu", "torch.tanh"],
)
def test_partial_of_a_torch_activation_passes(activation: object, protocol: int) -> None:
    assert_passes(scan_bytes(pickle.dumps({"act": activation}, protocol=protocol), "act.pkl"))


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_defaultdict_of_a_plain_type_passes(protocol: int) -> None:
    data = pickle.dumps(collections.defaultdict(list, {"a": [1]}), protocol=protocol)
    assert_passes(scan_bytes(data, "dd.pkl"))


# -- the red team's constructions ------------------------------------------------------------
REBUILD_FROM_TYPE = g("torch._tensor", "_rebuild_from_type")
REBUILD_FROM_TYPE_V2 = g("torch._tensor", "_rebuild_from_type_v2")
TENSOR = g("torch", "Tensor")

CALLED_ARGUMENT_CASES = {
    "rebuild-from-type-unknown": call(REBUILD_FROM_TYPE, UNKNOWN, TENSOR, tup(s("x")), dct({})),
    "rebuild-from-type-v2-unknown": call(REBUILD_FROM_TYPE_V2, UNKNOWN, TENSOR, tup(s("x")), dct({})),
    "randomstate-ctor-unknown": call(g("numpy.random._pickle", "__randomstate_ctor"), s("x"), UNKNOWN),
    "generator-ctor-unknown": call(g("numpy.random._pickle", "__generator_ctor"), s("x"), UNKNOWN),
    "defaultdict-unknown": call(g("collections", "defaultdict"), UNKNOWN),
    "partial-unknown": call(g("functools", "partial"), UNKNOWN, s("x")),
    "partial-newobj-ex-unknown": newobj_ex(g("functools", "partial"), (UNKNOWN,), {"cmd": s("x")}),
    "reconstructor-unknown-base": call(g("copyreg", "_reconstructor"), g("mymod", "Cls"), UNKNOWN, s("x")),
    "backward-hook-unknown": call(g("torch._utils", "_rebuild_parameter"), call(TENSOR), i(0), dct({"0": UNKNOWN})),
    "ao-prefix-partial": call(g("torch.ao.quantization.observer", "partial"), UNKNOWN),
    # pandas' Index rebuild helpers run `cls.__new__` / `cls._simple_new` of the class they are handed.
    "pandas-new-index-unknown": call(g("pandas.core.indexes.base", "_new_Index"), UNKNOWN, dct({})),
    "pandas-new-interval-index-unknown": call(
        g("pandas.core.indexes.interval", "_new_IntervalIndex"), UNKNOWN, dct({})
    ),
    "pandas-new-datetime-index-unknown": call(
        g("pandas.core.indexes.datetimes", "_new_DatetimeIndex"), UNKNOWN, dct({})
    ),
    "pandas-new-timedelta-index-unknown": call(
        g("pandas.core.indexes.timedeltas", "_new_TimedeltaIndex"), UNKNOWN, dct({})
    ),
    "pandas-new-period-index-unknown": call(g("pandas.core.indexes.period", "_new_PeriodIndex"), UNKNOWN),
}


@pytest.mark.parametrize("name", list(CALLED_ARGUMENT_CASES))
def test_allowed_callable_handed_an_unknown_callable_is_flagged(name: str) -> None:
    report = scan_bytes(stream(CALLED_ARGUMENT_CASES[name]), f"{name}.pkl")
    assert_fails_with(report, "pickle.unknown-callable")
    assert any(f.evidence in ("mymod.helper", "torch.ao.quantization.observer.partial") for f in report.findings)


@pytest.mark.parametrize("name", list(CALLED_ARGUMENT_CASES))
def test_allowed_callable_handed_a_dangerous_callable_is_critical(name: str) -> None:
    data = stream(CALLED_ARGUMENT_CASES[name].replace(UNKNOWN, SYSTEM))
    report = scan_bytes(data, f"{name}.pkl")
    assert_fails_with(report, "pickle.dangerous-global")
    assert _severity(report, "pickle.dangerous-global") is Severity.CRITICAL


@pytest.mark.parametrize(
    "cls", [g("pandas", "Index"), g("pandas.core.indexes.base", "Index"), g("pandas", "RangeIndex")]
)
def test_pandas_new_index_of_a_pandas_index_class_passes(cls: bytes) -> None:
    # Both spellings: pandas >= 3 writes `pandas.Index`, earlier versions the defining module.
    data = stream(call(g("pandas.core.indexes.base", "_new_Index"), cls, dct({"data": lst(i(1)), "name": s("x")})))
    assert_passes(scan_bytes(data, "index.pkl"))


def test_pandas_new_index_of_an_unknown_class_is_a_call_of_that_class() -> None:
    data = stream(call(g("pandas.core.indexes.base", "_new_Index"), g("mymod", "Index"), dct({})))
    report = scan_bytes(data, "index.pkl")
    assert_fails_with(report, "pickle.unknown-callable")
    assert "mymod.Index" in {f.evidence for f in report.findings}


def test_pandas_new_index_runs_the_class_it_is_handed_under_the_stock_loader(tmp_path: Path) -> None:
    # _new_Index does cls.__new__(cls, **d): a class handed to it is constructed, so its
    # code runs (here PosixPath, whose construction is observable and harmless).
    data = stream(call(g("pandas.core.indexes.base", "_new_Index"), g("pathlib", "PosixPath"), dct({})))
    done = load_in_subprocess(data, tmp_path)
    assert done.returncode == 0, done.stderr


def test_rebuild_from_type_checks_the_spread_arguments_against_the_called_spec() -> None:
    # func is itself allowed; what it is called with is checked against its own spec.
    inner = call(
        REBUILD_FROM_TYPE_V2, g("numpy.random._pickle", "__randomstate_ctor"), TENSOR, tup(s("x"), UNKNOWN), dct({})
    )
    assert_fails_with(scan_bytes(stream(inner), "nested.pkl"), "pickle.unknown-callable")


def test_a_computed_callable_in_a_called_position_is_a_call_chain() -> None:
    made = call(g("builtins", "getattr"), UNKNOWN, s("run"))
    data = stream(call(REBUILD_FROM_TYPE_V2, call(UNKNOWN), TENSOR, tup(), dct({})))
    assert_fails_with(scan_bytes(data, "chain.pkl"), "pickle.call-chain")
    # getattr on a global resolves statically: the attribute is then judged as what is called.
    report = scan_bytes(stream(call(REBUILD_FROM_TYPE, made, TENSOR, tup(), dct({}))), "c.pkl")
    assert_fails_with(report, "pickle.attribute-path")


def test_the_bit_generator_class_is_judged_as_rebuilt() -> None:
    report = scan_bytes(stream(call(g("numpy.random._pickle", "__bit_generator_ctor"), g("mymod", "Gen"))), "bg.pkl")
    assert "pickle.unknown-class" in rules(report), describe(report.findings)


@pytest.mark.parametrize("key", ["__class__", "__setstate__", "__reduce_ex__", "__dict__"])
def test_parameter_state_that_reaches_setattr_with_a_special_name_is_flagged(key: str) -> None:
    data = stream(
        call(g("torch._utils", "_rebuild_parameter_with_state"), call(TENSOR), i(0), odict(), dct({key: s("x")}))
    )
    assert_fails_with(scan_bytes(data, "state.pkl"), "pickle.build-dunder")


def test_parameter_state_made_while_loading_is_unverified() -> None:
    data = stream(call(g("torch._utils", "_rebuild_parameter_with_state"), call(TENSOR), i(0), odict(), call(UNKNOWN)))
    assert "pickle.unverified-arguments" in rules(scan_bytes(data, "state.pkl"))


def test_arguments_made_while_loading_for_a_calling_spec_are_unverified() -> None:
    args = call(g("builtins", "tuple"), lst(UNKNOWN))
    data = stream(REBUILD_FROM_TYPE + args + b"R")
    assert_fails_with(scan_bytes(data, "args.pkl"), "pickle.unverified-arguments")


def test_partial_state_that_swaps_the_function_is_checked() -> None:
    partial = call(g("functools", "partial"), g("torch.nn.functional", "relu"))
    data = stream(build(partial, tup(SYSTEM, tup(s("true")), dct({}), b"N")))
    assert_fails_with(scan_bytes(data, "swap.pkl"), "pickle.dangerous-global")


def test_partial_bound_arguments_are_checked_against_the_function_spec() -> None:
    data = stream(call(g("functools", "partial"), REBUILD_FROM_TYPE, UNKNOWN))
    assert_fails_with(scan_bytes(data, "bound.pkl"), "pickle.unknown-callable")


def test_partial_passes_only_through_its_function() -> None:
    data = stream(newobj_ex(g("functools", "partial"), (g("torch.nn.functional", "gelu"),), {"approximate": s("tanh")}))
    assert_passes(scan_bytes(data, "ok.pkl"))


def test_reconstructor_with_a_plain_base_stays_a_rebuilt_class() -> None:
    data = stream(call(g("copy_reg", "_reconstructor"), g("mymod", "Cls"), g("__builtin__", "object"), b"N"))
    report = scan_bytes(data, "plain.pkl")
    assert_passes(report)
    assert "pickle.unknown-class" in rules(report)


def test_joblib_wrapper_state_names_a_rebuilt_subclass() -> None:
    wrapper = newobj(g("joblib.numpy_pickle", "NumpyArrayWrapper"))
    data = stream(build(wrapper, dct({"subclass": g("mymod", "Arr"), "shape": tup(i(1))})))
    assert "pickle.unknown-class" in rules(scan_bytes(data, "w.pkl"))


# -- getattr -----------------------------------------------------------------------------------
def test_getattr_resolves_to_the_attribute_it_names() -> None:
    method = call(g("builtins", "getattr"), g("mymod", "Tool"), s("run"))
    report = scan_bytes(stream(call(method, s("x"))), "ga.pkl")
    assert_fails_with(report, "pickle.attribute-path")
    assert "pickle.dangerous-global" not in rules(report), describe(report.findings)
    assert any(f.evidence == "mymod.Tool.run" for f in report.findings)


@pytest.mark.parametrize(
    "args",
    [
        (g("zoneinfo", "ZoneInfo"), s("__init__")),
        (g("mymod", "f"), s("__globals__")),
        (call(g("mymod", "make")), s("run")),
        (g("zoneinfo", "ZoneInfo"), call(g("builtins", "str"), s("_unpickle"))),
    ],
    ids=["dunder", "globals", "computed-object", "computed-name"],
)
def test_getattr_that_cannot_be_resolved_safely_stays_critical(args: tuple[bytes, bytes]) -> None:
    report = scan_bytes(stream(call(g("builtins", "getattr"), *args)), "ga.pkl")
    assert_fails_with(report, "pickle.dangerous-global")
    assert _severity(report, "pickle.dangerous-global") is Severity.CRITICAL


def test_getattr_of_a_dangerous_path_is_critical() -> None:
    data = stream(call(call(g("builtins", "getattr"), g("torch.serialization", "os"), s("system")), s("true")))
    assert_fails_with(scan_bytes(data, "ga.pkl"), "pickle.dangerous-global")


# -- the stock loader really runs these -----------------------------------------------------
def test_rebuild_from_type_really_calls_its_function_under_the_stock_loader(tmp_path: Path) -> None:
    marker = tmp_path / "rebuild-ran"
    touch = call(g("pathlib", "PosixPath"), s(str(marker)))
    data = stream(call(REBUILD_FROM_TYPE, g("pathlib", "Path.touch"), TENSOR, tup(touch), dct({})))
    assert_fails_with(scan_bytes(data, "rft.pkl"), "pickle.attribute-path")
    done = load_in_subprocess(data, tmp_path)
    assert done.returncode == 0, done.stderr
    assert marker.exists()


def test_hooks_set_through_parameter_state_are_judged_as_called() -> None:
    state = dct({"_backward_hooks": dct({"0": UNKNOWN})})
    data = stream(call(g("torch._utils", "_rebuild_parameter_with_state"), call(TENSOR), i(0), odict(), state))
    assert_fails_with(scan_bytes(data, "hooks.pkl"), "pickle.unknown-callable")


def test_namespace_keywords_are_attribute_names() -> None:
    bound = call(g("functools", "partial"), g("argparse", "Namespace"))
    data = stream(build(bound, tup(g("argparse", "Namespace"), tup(), dct({"__class__": s("x")}), b"N")))
    assert_fails_with(scan_bytes(data, "ns.pkl"), "pickle.build-dunder")


def test_partial_state_with_computed_bound_arguments_is_unverified() -> None:
    sink = g("torch.storage", "_load_from_bytes")
    partial = call(g("functools", "partial"), sink)
    data = stream(build(partial, tup(sink, call(g("builtins", "tuple"), lst(call(UNKNOWN))), dct({}), b"N")))
    assert_fails_with(scan_bytes(data, "p.pkl"), "pickle.unverified-arguments")


def test_fake_quantize_partial_calls_its_observer() -> None:
    fake = g("torch.ao.quantization.fake_quantize", "FakeQuantize")
    data = stream(newobj_ex(g("functools", "partial"), (fake,), {"observer": UNKNOWN}))
    assert_fails_with(scan_bytes(data, "fq.pkl"), "pickle.unknown-callable")


def test_a_hooks_dict_filled_after_the_call_is_still_judged() -> None:
    # The dict is memoised, handed to the rebuild as backward_hooks, then filled by SETITEMS.
    hooks = dct({}) + b"\x94"  # MEMOIZE as 0
    rebuilt = call(g("torch._utils", "_rebuild_parameter"), call(TENSOR), i(0), hooks)
    fill = b"0h\x00" + s("0") + UNKNOWN + b"s0"  # POP the result, BINGET 0, SETITEM, POP
    data = stream(rebuilt + fill + b"N")
    assert_fails_with(scan_bytes(data, "late.pkl"), "pickle.unknown-callable")


def test_a_partials_keywords_filled_after_its_state_are_still_bound() -> None:
    keywords = dct({}) + b"\x94"
    partial = call(g("functools", "partial"), g("builtins", "sorted"))
    state = tup(g("builtins", "sorted"), tup(), keywords, b"N")
    fill = b"0h\x00" + s("key") + UNKNOWN + b"s0"
    data = stream(build(partial, state) + fill + b"N")
    assert_fails_with(scan_bytes(data, "late.pkl"), "pickle.unknown-callable")


def test_a_state_dict_given_a_setstate_after_the_call_is_flagged() -> None:
    state = dct({}) + b"\x94"
    rebuilt = call(REBUILD_FROM_TYPE, g("torch._utils", "_rebuild_tensor"), g("mymod", "Sub"), tup(), state)
    fill = b"h\x00" + s("__setstate__") + UNKNOWN + b"s0"  # BINGET 0, SETITEM, POP; the result stays
    data = stream(rebuilt + fill + build(b"", dct({"x": i(1)})))
    assert_fails_with(scan_bytes(data, "late.pkl"), "pickle.build-dunder")
