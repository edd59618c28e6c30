"""The fused loop for pickles in memory decides exactly as the general reader does.

`Machine._run_memory` applies the commonest opcodes in place and hands everything else to
`_step`; the general loop (`parse_opcodes` and `_step`, which streams always take) applies every
opcode through `_step`. On the same bytes every observable of the emulation must agree: the value, the error and where it
broke, the globals and persistent ids, what was observed. Irregular spots (an empty stack, a
missing memo key, a truncated argument, a limit reached) are where a fast path could differ.
"""

from __future__ import annotations

import dataclasses
import io
import pickle
import struct
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.errors import LimitExceeded
from bastion.scan.limits import ScanLimits
from bastion.scan.pickle.opcodes import parse_opcodes
from bastion.scan.pickle.symbolic import Emulation, Global, Machine, PDict, Persistent, PSet, Result
from bastion.scan.source import MemorySource, StreamSource


def _plain(value: object, depth: int = 0) -> object:
    """A comparable picture of an emulated value (stand-ins by what they are, not identity)."""
    if depth > 20:
        return "..."
    if isinstance(value, (list, tuple)):
        return (type(value).__name__, [_plain(v, depth + 1) for v in value])
    if isinstance(value, PDict):
        return ("dict", [(_plain(k, depth + 1), _plain(v, depth + 1)) for k, v in value.items])
    if isinstance(value, PSet):
        return ("set", value.frozen, [_plain(v, depth + 1) for v in value.items])
    if isinstance(value, Global):
        return ("global", value.module, value.name)
    if isinstance(value, Result):
        return ("result", _plain(value.func, depth + 1), _plain(value.args, depth + 1))
    if isinstance(value, Persistent):
        return ("persistent", _plain(value.pid, depth + 1))
    if isinstance(value, float) and value != value:
        return "nan"
    return value


def _picture(run: Emulation | str) -> object:
    if isinstance(run, str):
        return run
    return (
        run.protocol,
        _plain(run.value),
        run.end,
        run.error,
        run.error_pos,
        [(g.module, g.name, g.pos, sorted(g.uses.items())) for g in run.globals],
        [_plain(p.pid) for p in run.persistent],
        [(o.event, o.pos, o.detail) for o in run.observations],
    )


class _General(Machine):
    """The same machine without the fused loop: every opcode through parse_opcodes and _step."""

    def _run_memory(self, src: MemorySource, quirk: Callable[[int, str], None]) -> None:
        for code, arg, pos in parse_opcodes(src, self.limits, quirk):
            if self._step(code, arg, pos, src):
                return


def _run(machine: Machine, src: MemorySource | StreamSource) -> Emulation | str:
    try:
        return machine.run(src)
    except LimitExceeded as err:
        return f"limit: {err.message}"


def _both(data: bytes, limits: ScanLimits | None = None) -> tuple[object, object]:
    """The fused loop's reading and the general one's, of the same buffer."""
    active = limits or ScanLimits()
    return _picture(_run(Machine(active), MemorySource(data, "x"))), _picture(
        _run(_General(active), MemorySource(data, "x"))
    )


IRREGULAR = {
    "BINPUT on an empty stack": b"\x80\x02q\x00N.",
    "MEMOIZE on an empty stack": b"\x80\x04\x94N.",
    "PUT on an empty stack": b"p0\nN.",
    "PUT after a POP empties the stack": b"I1\np0\n0p0\nN.",
    "BINGET of a missing key": b"\x80\x02h\x05.",
    "GET of a missing key": b"g3\n.",
    "GET of a key put earlier": b"I7\np3\n0g3\n.",
    "TUPLE3 with two items": b"\x80\x02K\x01K\x02\x87.",
    "TUPLE2 with one item": b"\x80\x02K\x01\x86.",
    "TUPLE1 on an empty stack": b"\x80\x02\x85.",
    "TUPLE without a MARK": b"K\x01t.",
    "APPEND to a tuple": b"\x80\x02)K\x01a.",
    "APPEND with one item": b"\x80\x02]a.",
    "APPENDS to a dict": b"\x80\x02}(K\x01e.",
    "SETITEMS with an odd count": b"\x80\x02}(K\x01K\x02K\x03u.",
    "SETITEM on a list": b"\x80\x02]K\x00K\x01s.",
    "SETITEMS on a list": b"\x80\x02](K\x00K\x01u.",
    "BININT1 cut short": b"\x80\x02K",
    "BINFLOAT cut short": b"\x80\x02G\x00\x00",
    "SHORT_BINUNICODE cut short": b"\x80\x04\x8c\x05ab",
    "BINUNICODE cut short": b"\x80\x02X\x05\x00\x00\x00ab",
    "BINUNICODE not UTF-8": b"\x80\x02X\x02\x00\x00\x00\xff\xfe.",
    "SHORT_BINUNICODE not UTF-8": b"\x80\x04\x8c\x02\xff\xfe.",
    "UNICODE with an escape": b"V\\u0041b\np0\n.",
    "UNICODE without a newline": b"Vabc",
    "INT with a sign": b"I-5\n.",
    "INT in octal": b"I017\n.",
    "INT as a bool": b"I01\n.",
    "INT of nineteen digits": b"I9999999999999999999\n.",
    "no STOP": b"\x80\x02K\x01",
    "a frame cut by an argument": b"\x80\x04\x95\x03\x00\x00\x00\x00\x00\x00\x00\x8c\x05hello.",
    "opcodes after a frame ends": b"\x80\x04\x95\x02\x00\x00\x00\x00\x00\x00\x00K\x01K\x02\x86.",
}


@pytest.mark.parametrize("data", list(IRREGULAR.values()), ids=list(IRREGULAR))
def test_irregular_streams_read_alike_in_memory_and_streamed(data: bytes) -> None:
    fused, general = _both(data)
    assert fused == general


@pytest.mark.parametrize(
    ("field", "value", "data"),
    [
        ("max_memo_entries", 1, b"\x80\x02K\x01q\x00K\x02q\x01."),
        ("max_memo_entries", 1, b"\x80\x04K\x01\x94K\x02\x94."),
        ("max_open_marks", 2, b"\x80\x02(((."),
        ("max_stack_items", 2, b"\x80\x02K\x01K\x02K\x03."),
        ("max_pickle_opcodes", 3, b"\x80\x02K\x01K\x02K\x03."),
    ],
)
def test_limits_are_reached_at_the_same_opcode(field: str, value: int, data: bytes) -> None:
    limits = dataclasses.replace(ScanLimits(), **{field: value})
    fused, general = _both(data, limits)
    assert fused == general
    assert isinstance(fused, str) and fused.startswith("limit:")


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_everyday_objects_read_alike(protocol: int) -> None:
    obj = {
        "floats": [0.5, -1e300, float("inf")],
        "ints": [*range(-3, 300, 7), 2**40, -(2**70)],
        "text": ["a", "é" * 40, "x" * 300, "back\\slash", "line\nbreak"],
        "nested": [(1,), (1, 2), (1, 2, 3), (1, 2, 3, 4), [], {}, set(), frozenset({1})],
        "shared": [[1]] * 3,
        "bytes": b"\x00" * 10,
        "none": [None, True, False],
    }
    data = pickle.dumps(obj, protocol=protocol)
    fused, general = _both(data)
    assert fused == general
    # A stream (a decompressed member) is read by the general loop only: the same again.
    assert _picture(_run(Machine(ScanLimits()), StreamSource(io.BytesIO(data), "x", len(data)))) == fused


# Opcodes the fused loop applies in place, with arguments, and a few it hands on.
_PIECES = [
    b"K\x01",
    b"K\xff",
    b"q\x00",
    b"q\x01",
    b"h\x00",
    b"h\x01",
    b"\x94",
    b"G" + struct.pack(">d", 1.5),
    b"\x8c\x01a",
    b"\x8c\x02\xc3\xa9",
    b"X\x01\x00\x00\x00b",
    b"(",
    b"]",
    b"}",
    b")",
    b"N",
    b"\x88",
    b"\x89",
    b"\x8f",
    b"\x85",
    b"\x86",
    b"\x87",
    b"t",
    b"l",
    b"a",
    b"e",
    b"s",
    b"u",
    b"I3\n",
    b"I0\n",
    b"p2\n",
    b"g2\n",
    b"Vab\n",
    b"0",
    b"1",
    b"2",
    b"\x95\x04\x00\x00\x00\x00\x00\x00\x00",
    b"J\x01\x00\x00\x00",
]


@settings(max_examples=1500)
@given(st.lists(st.sampled_from(_PIECES), max_size=40), st.sampled_from([b"", b"\x80\x02", b"\x80\x04"]))
def test_random_opcode_soups_read_alike(pieces: list[bytes], proto: bytes) -> None:
    data = proto + b"".join(pieces) + b"."
    fused, general = _both(data)
    assert fused == general, data
