"""BUILD's slot state runs property setters: a plain class is plain only for its dict state.

`load_build` stores the first part of a state in the instance's `__dict__` (no code runs) and
applies the second part, the slot state, with `setattr`, name by name: a property or descriptor
with a setter runs the class's own code. torch's `torch.utils.backcompat.Warning` is plain by
every other test (no `__new__`, `__setstate__` or `__setattr__` of its own), yet its `enabled`
setter calls `self.setter(value)`: with `setter` stored by the dict state, that is any call.
"""

from __future__ import annotations

from pathlib import Path

import torch.utils.backcompat

from bastion.scan.api import scan_bytes
from bastion.scan.pickle import known_classes
from corpus.expect import assert_fails_with, assert_passes, describe, rules
from corpus.spec_streams import build, call, dct, g, load_in_subprocess, newobj, raw_bytes, s, stream, touch_marker, tup

WARNING = g("torch.utils.backcompat", "Warning")


def _slot_state(dict_state: bytes, slot_state: bytes) -> bytes:
    return tup(dict_state, slot_state)


def test_the_generator_recorded_the_setter_from_the_class_itself() -> None:
    assert isinstance(vars(torch.utils.backcompat.Warning)["enabled"], property)
    assert "enabled" in known_classes.SETTERS["torch.utils.backcompat:Warning"]
    assert "torch.utils.backcompat:Warning" in known_classes.PLAIN_CLASSES


def test_slot_state_naming_a_property_setter_is_a_call() -> None:
    state = _slot_state(dct({"setter": g("builtins", "print")}), dct({"enabled": s("hi")}))
    report = scan_bytes(stream(build(newobj(WARNING), state)), "w.pkl")
    assert_fails_with(report, "pickle.property-setter")


def test_the_same_names_in_the_dict_state_run_nothing_and_pass() -> None:
    state = dct({"setter": s("not called"), "enabled": s("stored in __dict__")})
    report = scan_bytes(stream(build(newobj(WARNING), state)), "w.pkl")
    assert_passes(report)
    assert "pickle.property-setter" not in rules(report), describe(report.findings)


def test_slot_state_on_names_without_a_setter_passes() -> None:
    state = _slot_state(b"N", dct({"getter": s("a plain attribute")}))
    assert_passes(scan_bytes(stream(build(newobj(WARNING), state)), "w.pkl"))


def test_slot_state_whose_names_are_made_while_loading_is_not_trusted() -> None:
    names = call(g("builtins", "dict"), dct({"enabled": s("x")}))
    report = scan_bytes(stream(build(newobj(WARNING), _slot_state(b"N", names))), "w.pkl")
    assert_fails_with(report, "pickle.property-setter")


def test_the_setter_really_runs_under_the_stock_loader(tmp_path: Path) -> None:
    marker = tmp_path / "setter-ran"
    path = call(g("pathlib", "PosixPath"), s(str(marker)))
    state = _slot_state(dct({"setter": g("pathlib", "Path.touch")}), dct({"enabled": path}))
    data = stream(build(newobj(WARNING), state))
    assert_fails_with(scan_bytes(data, "w.pkl"), "pickle.property-setter")
    done = load_in_subprocess(data, tmp_path)
    assert done.returncode == 0, done.stderr
    assert marker.exists()


def test_an_allowed_sink_called_through_the_setter_is_caught(tmp_path: Path) -> None:
    """The setter hides the call from the argument specs: `torch.storage._load_from_bytes`, allowed
    with its argument checked as a nested pickle, is called here with bytes no check saw. Before
    the setter rule this file passed, and the stock loader ran the nested pickle's payload."""
    marker = tmp_path / "nested-ran"
    nested = stream(touch_marker(marker))
    state = _slot_state(dct({"setter": g("torch.storage", "_load_from_bytes")}), dct({"enabled": raw_bytes(nested)}))
    data = stream(build(newobj(WARNING), state))
    assert_fails_with(scan_bytes(data, "w.pkl"), "pickle.property-setter")
    load_in_subprocess(data, tmp_path)  # torch.load then fails on the missing magic number, after the payload
    assert marker.exists()
