"""Regressions: opcodes Bastion once read differently from CPython, each checked against the readers.

Every case runs the stream through CPython's C and pure-Python unpicklers over recorders
(nothing is imported) and through Bastion's emulation. Where a reader loads it, Bastion must
load it too, to the same value; where both readers refuse it, Bastion refuses it. The
numbers are the class-4 misreadings of issue 11 (`I0x64`, parsed with base 0) and their
relatives found by the differential test: C's strtol reads "017" as octal and stops at a NUL.
"""

from __future__ import annotations

import pytest

from bastion.findings import Severity, Verdict
from bastion.scan.api import scan_bytes
from bastion.scan.pickle.symbolic import Global, PDict, PSet, Use

from .compare import run_bastion
from .recorders import READERS, bounded_memory, run_reader

INT_LINES = [
    b"0x64", b"0X1f", b"-0x10", b"0o17", b"0b101", b"017", b"-017", b"0777", b"1_000", b" 12 ", b"+1", b" 1",
    b"-0", b"01", b"00", b"000", b"5\x00junk", b"\x00", b"1\x00", b"99999999999999999999", b"-9223372036854775808",
    b"9223372036854775808", b"0x_1f", b"\t7", b"0x" + b"f" * 5000, b"1" * 5000, b"0" + b"7" * 5000,
]  # fmt: skip
BAD_INT_LINES = [b"08", b"0x", b"1.5", b"abc", b"+", b"1__0", b"_1", b"0b", b""]
LONG_LINES = [b"0x10L", b"12L", b"12", b"-5L", b"1_0L", b"0o7", b"5\x00zzL", b"5\x00zz", b" 3L", b"0b11L", b"12 L"]
BAD_LONG_LINES = [b"L", b"12LL", b"017L", b""]
FLOAT_LINES = [b"1.5", b"inf", b"-inf", b"Infinity", b" 2.5", b"1_0.5", b"1e500", b"1.5\x00x", b".5", b"5.", b"+nan"]
BAD_FLOAT_LINES = [b"1e", b"abc", b"0x1p3", b""]


def _readers(data: bytes) -> dict[str, object]:
    with bounded_memory():
        return {name: run_reader(READERS[name](), data) for name in ("c", "python")}


def _plain(value: object) -> object:
    """Bastion's stand-in containers as the Python values CPython builds."""
    if isinstance(value, PSet):
        return (frozenset if value.frozen else set)(_plain(v) for v in value.items)
    if isinstance(value, PDict):
        return {_plain(k): _plain(v) for k, v in value.items}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_plain(v) for v in value)
    return value


def _same(a: object, b: object) -> bool:
    a = _plain(a)
    if isinstance(a, float) and isinstance(b, float) and a != a:
        return b != b  # nan
    return type(a) is type(b) and a == b


def _assert_reads_as_cpython(data: bytes) -> None:
    runs = _readers(data)
    emu = run_bastion(data)
    loaded = [run for run in runs.values() if run.completed]  # type: ignore[attr-defined]
    if not loaded:
        assert emu.error is not None, f"both readers refuse {data!r}; Bastion read {emu.value!r}"
        return
    assert emu.error is None, f"a reader loads {data!r}; Bastion stopped: {emu.error}"
    c = runs["c"]
    expected = c.value if c.completed else loaded[0].value  # type: ignore[attr-defined]
    assert _same(emu.value, expected), f"{data!r}: Bastion {emu.value!r}, CPython {expected!r}"


@pytest.mark.parametrize("line", INT_LINES + BAD_INT_LINES, ids=repr)
def test_protocol_0_int_reads_as_cpython_reads_it(line: bytes) -> None:
    _assert_reads_as_cpython(b"I" + line + b"\n.")


@pytest.mark.parametrize("line", LONG_LINES + BAD_LONG_LINES, ids=repr)
def test_protocol_0_long_reads_as_cpython_reads_it(line: bytes) -> None:
    _assert_reads_as_cpython(b"L" + line + b"\n.")


@pytest.mark.parametrize("line", FLOAT_LINES + BAD_FLOAT_LINES, ids=repr)
def test_protocol_0_float_reads_as_cpython_reads_it(line: bytes) -> None:
    _assert_reads_as_cpython(b"F" + line + b"\n.")


@pytest.mark.parametrize(
    "data",
    [
        b"K\x05p 1\n0g+1\n.",  # memo indices are base-10 ints to both readers: signs and spaces
        b"K\x05p1_0\n0g10\n.",
        b"K\x05p3\x00x\n0g3\n.",  # the C reader stops at the NUL
        b"K\x05p-1\n.",  # negative PUT: refused by both
        b"K\x05p1\n0g01\n.",
        b"S'abc'\r\n.",  # quotes must be the line's last byte: a CR-LF line is refused
        b"S'abc' \n.",
        b"S'a\\x41'\n.",
    ],
    ids=repr,
)
def test_text_arguments_read_as_cpython_reads_them(data: bytes) -> None:
    _assert_reads_as_cpython(data)


@pytest.mark.parametrize(
    "data",
    [
        b"]K\x01aK\x00K\x07s.",  # SETITEM on a list: list[0] = 7
        b"]K\x01aK\x02K\x07s.",  # index out of range: refused by both
        b"]K\x01aS'a'\nK\x07s.",  # a str index: refused by both
        b"]K\x01aK\x01a(J\xff\xff\xff\xffK\x07K\x00K\x08u.",  # SETITEMS on a list, negative index
        b"]K\x01a\x88K\x07s.",  # list[True] is list[1]... out of range here
        b"\x96\x01\x00\x00\x00\x00\x00\x00\x00aK\x62a.",  # APPEND on a bytearray
        b"\x96\x01\x00\x00\x00\x00\x00\x00\x00a(K\x62K\x63e.",  # APPENDS on a bytearray
        b"\x96\x01\x00\x00\x00\x00\x00\x00\x00aK\x00K\x62s.",  # SETITEM on a bytearray
        b"K\x01(e.",  # APPENDS with no items: the C reader never looks at the target
        b"K\x01(u.",
        b"K\x01(\x90.",
        b"(K\x01K\x02\x91(K\x03\x90.",  # ADDITEMS on a frozenset: refused by both
        b"\x8f(K\x03\x90.",
        b"S'x'\n(K\x01e.",  # APPENDS on a str: refused by both
        b"}(K\x01e.",  # a dict has neither extend nor append
    ],
    ids=repr,
)
def test_container_opcodes_accept_what_cpython_accepts(data: bytes) -> None:
    _assert_reads_as_cpython(data)


def _global(emu_globals: list[Global], dotted: str) -> Global:
    return next(g for g in emu_globals if g.dotted == dotted)


@pytest.mark.parametrize(
    "data",
    [
        b"csys\npath\nK\x01a.",
        b"csys\npath\n(K\x01e.",
        b"csys\npath\n(e.",  # the pure-Python reader calls path.extend([]) all the same
        b"csys\npath\nK\x00K\x01s.",
        b"csys\npath\n(K\x01K\x02u.",
        b"csys\npath\n(K\x01\x90.",
    ],
    ids=repr,
)
def test_container_opcodes_on_an_imported_object_mutate_it(data: bytes) -> None:
    emu = run_bastion(data)
    assert emu.error is None
    assert Use.MUTATE in _global(emu.globals, "sys.path").uses


def test_setitems_with_an_odd_item_changes_the_target_before_it_fails() -> None:
    # The pure-Python reader stores sys.path[1] = 2 before it trips on the lone 3.
    data = b"csys\npath\n(K\x01K\x02K\x03u."
    assert ("mutate", ("sys", "path")) in _readers(data)["python"].events  # type: ignore[attr-defined]
    emu = run_bastion(data)
    assert emu.error is not None
    assert Use.MUTATE in _global(emu.globals, "sys.path").uses


@pytest.mark.parametrize("args", [b"](cbuiltins\nprint\nS'x'\ne", b"}cbuiltins\nprint\nNs"], ids=repr)
def test_reduce_arguments_in_a_list_or_dict_are_spread_like_a_tuple(args: bytes) -> None:
    # joblib's reader calls func(*args) on any iterable; the C reader wants a tuple. The
    # callee sees positional arguments either way, and argument checks must see them too.
    data = b"\x80\x02ctorch._tensor\n_rebuild_from_type_v2\n" + args + b"R."
    runs = _readers(data)
    assert runs["python"].completed and not runs["c"].completed  # type: ignore[attr-defined]
    emu = run_bastion(data)
    assert emu.error is None
    assert max(_global(emu.globals, "builtins.print").uses) >= Use.CALL


def test_build_calls_the_items_of_a_global_given_as_slot_state() -> None:
    # Found by the differential campaign (seed 101): with no __setstate__ on the target,
    # the pure-Python reader calls slotstate.items() (and state.items(), on a target with a
    # __dict__) on whatever they are: here an imported object.
    data = b"\x80\x02N)cmod\nstate\n\x86b."
    assert ("method", ("mod", "state")) in _readers(data)["python"].events  # type: ignore[attr-defined]
    assert max(_global(run_bastion(data).globals, "mod.state").uses) >= Use.CALL


def test_unterminated_last_line_imports_as_the_python_reader_does() -> None:
    # joblib's pure-Python reader takes "system" (no newline, end of file) as the line
    # "syste", imports os, and only then fails.
    data = b"cos\nsystem"
    runs = _readers(data)
    assert ("import", ("os", "syste")) in runs["python"].events  # type: ignore[attr-defined]
    emu = run_bastion(data)
    assert emu.error is not None
    assert [g.dotted for g in emu.globals] == ["os.syste"]


def test_inst_without_mark_imports_before_it_fails() -> None:
    runs = _readers(b"ios\nsystem\n.")
    assert ("import", ("os", "system")) in runs["python"].events  # type: ignore[attr-defined]
    emu = run_bastion(b"ios\nsystem\n.")
    assert emu.error is not None
    assert [g.dotted for g in emu.globals] == ["os.system"]


def test_newobj_ex_calls_the_keys_of_a_global_given_as_kwargs() -> None:
    data = b"\x80\x04cbuiltins\nobject\n)cmod\nmapping\n\x92."
    runs = _readers(data)
    assert ("method", ("mod", "mapping")) in runs["python"].events  # type: ignore[attr-defined]
    assert max(_global(run_bastion(data).globals, "mod.mapping").uses) >= Use.CALL


@pytest.mark.parametrize(
    "prefix",
    [b"I0x64\n0", b"I017\n0", b"I0o17\n0", b"L0x10L\n0", b"I5\x00x\n0", b"F1.5\x00x\n0", b"]K\x00aK\x00K\x01s0"],
    ids=repr,
)
def test_payload_behind_a_misread_opcode_is_blocked(prefix: bytes) -> None:
    # Headerless streams are tried as pickle and dropped if they do not parse: an opcode
    # Bastion refused and CPython accepts used to hide everything after it.
    data = prefix + b"cos\nsystem\n(S'true'\ntR."
    assert scan_bytes(data, "upload").verdict(Severity.HIGH) is Verdict.FAIL
