"""Pickles assembled opcode by opcode, for constructions the pickle module never writes itself.

Each case names the rule a scanner must raise and whether the file must pass at the default
policy (block at HIGH). Payloads are harmless (`true`, `1+1`); never unpickle these bytes.
"""

from __future__ import annotations

import pickle
import struct
from dataclasses import dataclass

PROTO2 = b"\x80\x02"
PROTO4 = b"\x80\x04"
MARK = b"("
STOP = b"."
POP = b"0"
NONE = b"N"
REDUCE = b"R"
BUILD = b"b"
OBJ = b"o"
NEWOBJ = b"\x81"
TUPLE1 = b"\x85"
TUPLE3 = b"\x87"
EMPTY_TUPLE = b")"
EMPTY_DICT = b"}"
SETITEM = b"s"
MEMOIZE = b"\x94"
STACK_GLOBAL = b"\x93"


def glob(module: str, name: str) -> bytes:
    """GLOBAL: `c module\\n name\\n` (protocols 0 to 3, still accepted by later readers)."""
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def short_unicode(text: str) -> bytes:
    """SHORT_BINUNICODE (protocol 4)."""
    raw = text.encode()
    assert len(raw) < 256
    return b"\x8c" + bytes([len(raw)]) + raw


def binunicode(text: str) -> bytes:
    """BINUNICODE (protocol 1 and later)."""
    raw = text.encode()
    return b"X" + struct.pack("<I", len(raw)) + raw


def binget(index: int) -> bytes:
    return b"h" + bytes([index])


@dataclass(frozen=True)
class PickleCase:
    name: str
    data: bytes
    rules: frozenset[str]
    """At least one of these rule ids must be reported."""
    passes: bool
    """True when the file must PASS at the default policy (its findings stay below HIGH)."""


GLOBAL_REDUCE_OS_SYSTEM = PROTO2 + glob("os", "system") + binunicode("true") + TUPLE1 + REDUCE + STOP

# The name is built from two memoised strings, so no GLOBAL opcode spells it out.
STACK_GLOBAL_VIA_MEMO = (
    PROTO4
    + short_unicode("os") + MEMOIZE + POP
    + short_unicode("system") + MEMOIZE + POP
    + binget(0) + binget(1) + STACK_GLOBAL
    + short_unicode("true") + TUPLE1 + REDUCE + STOP
)

# INST imports and calls in one opcode (protocol 0).
INST_OS_SYSTEM = b"(S'true'\nios\nsystem\n."

# OBJ calls the class found after the mark with the rest as arguments (protocol 1).
OBJ_OS_SYSTEM = PROTO2 + MARK + glob("os", "system") + binunicode("true") + OBJ + STOP

NEWOBJ_UNKNOWN_CLASS = PROTO2 + glob("mymod", "Widget") + EMPTY_TUPLE + NEWOBJ + STOP

REDUCE_UNKNOWN_FUNCTION = PROTO2 + glob("mymod", "helper") + EMPTY_TUPLE + REDUCE + STOP

# A harmless-looking module, then an attribute path from it to os.system.
DOTTED_PATH_TO_OS_SYSTEM = (
    PROTO4
    + short_unicode("torch.serialization") + short_unicode("os.system") + STACK_GLOBAL
    + short_unicode("true") + TUPLE1 + REDUCE + STOP
)

# BUILD on a class object sets attributes on the class itself, for every later user.
BUILD_ONTO_GLOBAL = (
    PROTO4 + glob("mymod", "Settings") + EMPTY_DICT + short_unicode("handler") + short_unicode("x") + SETITEM + BUILD + STOP
)
BUILD_ONTO_TRUSTED_GLOBAL = (
    PROTO4
    + glob("collections", "OrderedDict")
    + EMPTY_DICT + short_unicode("__reduce__") + short_unicode("x") + SETITEM + BUILD + STOP
)

BUILTIN_EVAL_PROTO2 = PROTO2 + glob("__builtin__", "eval") + binunicode("1+1") + TUPLE1 + REDUCE + STOP

TWO_STREAMS_SECOND_MALICIOUS = pickle.dumps([1, 2, 3], protocol=2) + GLOBAL_REDUCE_OS_SYSTEM

TRAILING_JUNK = pickle.dumps({"weights": [1.0, 2.0]}, protocol=4) + b"\xde\xad\xbe\xef" * 8

# copyreg._reconstructor(cls, object, None) is how protocols 0 and 1 rebuild plain instances.
COPYREG_RECONSTRUCTOR_UNKNOWN_CLASS = (
    PROTO2 + glob("copyreg", "_reconstructor") + glob("mymod", "Cls") + glob("builtins", "object") + NONE + TUPLE3 + REDUCE + STOP
)

CASES: tuple[PickleCase, ...] = (
    PickleCase("global-reduce-os-system", GLOBAL_REDUCE_OS_SYSTEM, frozenset({"pickle.dangerous-global"}), passes=False),
    PickleCase("stack-global-via-memo", STACK_GLOBAL_VIA_MEMO, frozenset({"pickle.dangerous-global"}), passes=False),
    PickleCase("inst-os-system", INST_OS_SYSTEM, frozenset({"pickle.dangerous-global"}), passes=False),
    PickleCase("obj-os-system", OBJ_OS_SYSTEM, frozenset({"pickle.dangerous-global"}), passes=False),
    PickleCase("newobj-unknown-class", NEWOBJ_UNKNOWN_CLASS, frozenset({"pickle.unknown-class"}), passes=True),
    PickleCase("reduce-unknown-function", REDUCE_UNKNOWN_FUNCTION, frozenset({"pickle.unknown-callable"}), passes=False),
    PickleCase(
        "dotted-path-to-os-system",
        DOTTED_PATH_TO_OS_SYSTEM,
        frozenset({"pickle.dangerous-global", "pickle.attribute-path"}),
        passes=False,
    ),
    PickleCase("build-onto-global", BUILD_ONTO_GLOBAL, frozenset({"pickle.mutated-global"}), passes=False),
    PickleCase(
        "build-onto-trusted-global",
        BUILD_ONTO_TRUSTED_GLOBAL,
        frozenset({"pickle.mutated-global", "pickle.build-dunder"}),
        passes=False,
    ),
    PickleCase("builtin-eval-proto2", BUILTIN_EVAL_PROTO2, frozenset({"pickle.dangerous-global"}), passes=False),
    PickleCase(
        "two-streams-second-malicious", TWO_STREAMS_SECOND_MALICIOUS, frozenset({"pickle.dangerous-global"}), passes=False
    ),
    PickleCase("trailing-junk", TRAILING_JUNK, frozenset({"pickle.trailing-data"}), passes=True),
    PickleCase(
        "copyreg-reconstructor-unknown-class",
        COPYREG_RECONSTRUCTOR_UNKNOWN_CLASS,
        frozenset({"pickle.unknown-class"}),
        passes=True,
    ),
)
