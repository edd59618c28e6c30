"""A symbolic pickle machine: runs the opcode stream over stand-in values, never real objects.

It answers "what would loading this do?" by tracking every global the stream names and
what the stream does with it: calls it (REDUCE, INST, OBJ), rebuilds an instance through
the standard paths (NEWOBJ, copyreg), changes its attributes (BUILD), or only mentions it.
Names assembled on the stack or fetched from the memo are resolved exactly as the real
machine would resolve them; what cannot be resolved statically is reported, never guessed.
Each call of an allowed callable is checked against its specification (callables.py): what
it calls, instantiates, imports, unpickles or applies as state is judged as such.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import cast

from bastion.errors import ArtifactError, LimitExceeded
from bastion.scan.limits import ScanLimits
from bastion.scan.pickle.callables import CallableSpec, CallArgs, Effect, Param, canonical_module, spec_for
from bastion.scan.pickle.opcodes import (
    DECIMAL_LINE,
    F8,
    FRAME_CODES,
    MAX_LINE,
    U4,
    Frames,
    LargeData,
    decode_utf8,
    parse_opcodes,
    plain_decimal_at,
    read_memory_arg,
)
from bastion.scan.source import ByteSource, MemorySource


class Use(enum.IntEnum):
    """What the stream does with a global, from least to most dangerous."""

    RESOLVED = 0
    """builtins.getattr called on a global with a literal attribute: resolved to that attribute."""
    MENTION = 1
    RECONSTRUCT = 2
    CALL = 3
    MUTATE = 4
    UNVERIFIED = 5
    """An allowed callable called with arguments its specification needs but cannot see."""
    OPAQUE_PICKLE = 6
    """An unpickling sink fed bytes that cannot be analysed (made at load time, or too long)."""


# A class called more often than this in one stream is judged without its arguments (as unknown).
_MAX_KEPT_CALLS = 256


@dataclass(eq=False, slots=True)
class Global:
    """A name the stream imports (GLOBAL, STACK_GLOBAL, INST, OBJ's class)."""

    module: str
    name: str
    pos: int
    uses: dict[Use, int] = field(default_factory=dict)
    call_count: int = 0
    """How many times the stream calls this name, by any path."""
    calls: list[object] | None = None
    """The arguments of the calls made by REDUCE, INST and OBJ (at most _MAX_KEPT_CALLS), for the
    rules that judge a class by what it does with them. A call counted but not kept here (one
    implied by another callee's arguments, or past the limit) leaves nothing to judge it by."""
    set_attrs: list[str] | None = None
    """Names BUILD's slot state assigns with setattr on an instance of this class: a property
    setter among them runs the class's code (the rules look them up in known_classes.SETTERS)."""

    def use(self, how: Use, pos: int) -> None:
        self.uses.setdefault(how, pos)
        if how is Use.CALL:
            self.call_count += 1

    def sets(self, names: list[str]) -> None:
        """Keep the attribute names one BUILD assigns with setattr (at most _MAX_KEPT_CALLS)."""
        if self.set_attrs is None:
            self.set_attrs = []
        for name in names:
            if name not in self.set_attrs and len(self.set_attrs) < _MAX_KEPT_CALLS:
                self.set_attrs.append(name)

    def called_with(self, args: object) -> None:
        """Keep the arguments of one call counted by `use(Use.CALL, ...)`."""
        if self.calls is None:
            self.calls = []
        if len(self.calls) < _MAX_KEPT_CALLS:
            self.calls.append(args)

    @property
    def dotted(self) -> str:
        return f"{self.module}.{self.name}"


@dataclass(eq=False, slots=True)
class Result:
    """What calling or instantiating something returns: opaque, but its origin is kept."""

    func: object
    args: object
    pos: int
    how: str
    state: object = None


@dataclass(eq=False, slots=True)
class Persistent:
    """A persistent id (PERSID/BINPERSID): resolved by the loader, e.g. torch storages."""

    pid: object


@dataclass(eq=False, slots=True)
class Unknown:
    """A value the emulator cannot know (a buffer, an extension code, a computed name)."""

    what: str


@dataclass(eq=False, slots=True)
class PDict:
    """A dict as pairs: keys may be stand-ins that a real dict could not hash."""

    items: list[tuple[object, object]] = field(default_factory=list)


@dataclass(eq=False, slots=True)
class PSet:
    items: list[object] = field(default_factory=list)
    frozen: bool = False
    """A frozenset (FROZENSET) has no `add`: ADDITEMS on one fails in CPython."""


# Opcodes that push a new empty value; the fast loop makes it with one call.
_EMPTY: dict[int, Callable[[], object]] = {
    0x5D: list,  # EMPTY_LIST
    0x7D: PDict,  # EMPTY_DICT
    0x29: tuple,  # EMPTY_TUPLE
    0x8F: PSet,  # EMPTY_SET
    0x4E: lambda: None,  # NONE
    0x88: lambda: True,  # NEWTRUE
    0x89: lambda: False,  # NEWFALSE
}

# Opcodes whose argument is the value they push (strings, bytes, numbers).
_PUSH_ARG = frozenset(
    {
        0x8C,
        0x58,
        0x8D,
        0x4B,
        0x4A,
        0x4D,
        0x47,
        0x43,
        0x42,
        0x8E,
        0x8A,
        0x8B,
        0x55,
        0x54,
        0x56,
        0x53,
        0x49,
        0x4C,
        0x46,
    }
)


class _Mark:
    __slots__ = ()


MARK = _Mark()


class Event(enum.Enum):
    """Structural observations that are suspicious whatever the names involved."""

    CALL_ON_RESULT = "calls a value produced while loading (a call chain)"
    CALL_NON_CALLABLE = "calls something that is not a name"
    BUILD_ON_GLOBAL = "changes attributes of an imported object with BUILD"
    BUILD_DUNDER = "sets a special attribute with BUILD"
    COMPUTED_GLOBAL = "imports a name that is not a literal string (STACK_GLOBAL on computed values)"
    EXTENSION = "imports through the copyreg extension registry (EXT opcodes)"
    FRAME_QUIRK = "has frame boundaries that no pickler writes"


@dataclass(slots=True)
class Observation:
    event: Event
    pos: int
    detail: str


@dataclass(slots=True)
class Emulation:
    """Everything one pickle stream does, as far as static emulation can tell."""

    protocol: int = 0
    globals: list[Global] = field(default_factory=list)
    persistent: list[Persistent] = field(default_factory=list)
    observations: list[Observation] = field(default_factory=list)
    value: object = None
    end: int = 0
    """Offset just past STOP (0 when the stream broke first)."""
    error: str | None = None
    error_pos: int | None = None


# Results of these are containers: in a position whose values are called later (a tensor's
# backward hooks), what matters is what they hold.
_CONTAINERS = frozenset(
    {
        "collections.OrderedDict",
        "builtins.dict",
        "builtins.list",
        "builtins.tuple",
        "builtins.set",
        "builtins.frozenset",
    }
)
# Pure conversions CPython's pickler writes to rebuild bytes (protocols 0-2), evaluated
# statically so that the bytes an unpickling sink receives can be scanned. Only these
# codecs: a codec name is looked up at load time, never by the scanner.
_TEXT_ENCODINGS = {"latin1": "latin-1", "latin-1": "latin-1", "latin_1": "latin-1", "iso-8859-1": "latin-1",
                   "iso8859-1": "latin-1", "l1": "latin-1", "utf-8": "utf-8", "utf8": "utf-8", "utf_8": "utf-8",
                   "ascii": "ascii", "us-ascii": "ascii"}  # fmt: skip
_MAX_SPEC_DEPTH = 4
_MAX_STORED_CONTAINERS = 10_000
_HOOKS = Param("hooks", Effect.STORED)
_CALLERS = (Effect.CALLED, Effect.STORED)

# Callables whose result is a tensor: item methods on it are calls no pickler writes.
_TENSOR_RESULTS = ("torch._utils._rebuild_", "torch._tensor._rebuild_from_type", "torch.nn.parameter.Parameter")

EmbeddedSink = Callable[[bytes, int, str], None]
# Called after each BUILD; may read bytes that a loader reads inline (joblib arrays).
BuildHook = Callable[["Machine", object, ByteSource, int], None]


_FLATTEN_BUDGET = 100_000
_MAX_OBSERVATIONS_PER_EVENT = 8


def _flatten(value: object, out: list[object]) -> None:
    """The leaves of a value, each shared container visited once (memo makes DAGs cheap to build)."""
    seen: set[int] = set()
    pending = [value]
    budget = _FLATTEN_BUDGET
    while pending and budget:
        budget -= 1
        item = pending.pop()
        if isinstance(item, (tuple, list, PDict, PSet)):
            if id(item) in seen:
                continue
            seen.add(id(item))
            if isinstance(item, PDict):
                pending.extend(part for pair in item.items for part in pair)
            elif isinstance(item, PSet):
                pending.extend(item.items)
            else:
                pending.extend(item)
        else:
            out.append(item)


def _dangerous_state_keys(state: object) -> list[str]:
    """Keys of a BUILD state that change what later opcodes do.

    BUILD looks `__setstate__` up on the instance, so a state that stores one makes the
    next BUILD call it; slot state is applied with setattr, so any special name there
    (`__class__`, `__dict__`) rewires the object. Other dunder keys in a plain __dict__
    update are inert (special methods are looked up on the type).
    """
    keys: list[str] = []
    dict_state, slot_state = (state[0], state[1]) if isinstance(state, tuple) and len(state) == 2 else (state, None)
    if isinstance(dict_state, PDict):
        keys.extend(k for k, _ in dict_state.items if k == "__setstate__")
    if isinstance(slot_state, PDict):
        keys.extend(k for k, _ in slot_state.items if isinstance(k, str) and k.startswith("__"))
    return keys


class Machine:
    """Emulates one pickle stream. Use `emulate()`; the class keeps the dispatch fast."""

    def __init__(
        self, limits: ScanLimits, on_embedded: EmbeddedSink | None = None, after_build: BuildHook | None = None
    ) -> None:
        self.limits = limits
        self.on_embedded = on_embedded
        self.after_build = after_build
        self.stack: list[object] = []
        self.metastack: list[list[object]] = []
        self.memo: dict[int, object] = {}
        self.counts: dict[Event, int] = {}
        self.out = Emulation()
        # Containers whose contents are called later (hooks dicts, a partial's keywords) can
        # still grow by SETITEMS/APPENDS after the call that stored them: re-read them at STOP.
        self.stored_containers: list[tuple[Param, object, Global, int]] = []
        self.stored_partials: list[tuple[CallableSpec, Global, PDict, int]] = []
        self.stored_states: list[tuple[Global, object, int]] = []

    # -- helpers -------------------------------------------------------------------
    def _pop(self) -> object:
        try:
            return self.stack.pop()
        except IndexError:
            raise ArtifactError("stack underflow") from None

    def _top(self) -> object:
        if not self.stack:
            raise ArtifactError("stack underflow")
        return self.stack[-1]

    def _pop_mark(self) -> list[object]:
        items = self.stack
        try:
            self.stack = self.metastack.pop()
        except IndexError:
            raise ArtifactError("MARK expected but missing") from None
        return items

    def _observe(self, event: Event, pos: int, detail: str = "") -> None:
        # The first few of each kind are evidence enough; thousands would only bloat the report.
        seen = self.counts.get(event, 0)
        self.counts[event] = seen + 1
        if seen < _MAX_OBSERVATIONS_PER_EVENT:
            self.out.observations.append(Observation(event, pos, detail))

    def _new_global(self, module: object, name: object, pos: int) -> object:
        if not isinstance(module, str) or not isinstance(name, str):
            self._observe(Event.COMPUTED_GLOBAL, pos, f"{_describe(module)} . {_describe(name)}")
            return Unknown("computed global")
        g = Global(module, name, pos)
        g.use(Use.MENTION, pos)
        self.out.globals.append(g)
        return g

    def _call(self, func: object, args: object, pos: int, how: str, kwargs: object = None) -> object:
        if isinstance(func, Global):
            spec = spec_for(func.module, func.name)
            if spec is None:
                if func.name == "getattr" and canonical_module(func.module) == "builtins":
                    attribute = self._resolve_getattr(func, args, pos)
                    if attribute is not None:
                        return attribute
                self._unlisted_arguments(func, args, pos)
            elif not spec.inert:
                self._check_arguments(spec, func, args, kwargs, pos, 0)
            func.use(Use.RECONSTRUCT if how == "newobj" else Use.CALL, pos)
            if how != "newobj":
                func.called_with(args)
        elif isinstance(func, Result):
            if how != "newobj":
                self._observe(Event.CALL_ON_RESULT, pos, _describe(func))
            else:
                self._observe(Event.CALL_ON_RESULT, pos, "instantiates " + _describe(func))
        else:
            self._observe(Event.CALL_NON_CALLABLE, pos, _describe(func))
        return Result(func, args, pos, how)

    def _unlisted_arguments(self, func: Global, args: object, pos: int) -> None:
        # A callable outside the catalogue is judged by its name; bytes handed to one (a
        # pickle.loads of a literal) are still worth showing to the caller.
        if self.on_embedded is not None and type(args) is tuple and args:
            first = args[0]
            if isinstance(first, bytes) and len(first) > 1:
                self.on_embedded(first, pos, func.dotted)

    def _resolve_getattr(self, func: Global, args: object, pos: int) -> Global | None:
        """getattr(<global>, "<literal>") is that attribute: CPython writes ZoneInfo._unpickle so."""
        if type(args) is not tuple or len(args) not in (2, 3):
            return None
        owner, attribute = args[0], args[1]
        if not isinstance(owner, Global) or not isinstance(attribute, str) or not attribute.isidentifier():
            return None
        # Special attributes lead from any object to code (__globals__, __class__, __reduce__):
        # those stay calls of getattr, judged by its name.
        if attribute.startswith("__"):
            return None
        func.use(Use.RESOLVED, pos)
        resolved = Global(owner.module, f"{owner.name}.{attribute}", pos)
        resolved.use(Use.MENTION, pos)
        self.out.globals.append(resolved)
        return resolved

    # -- what allowed callables do with their arguments (callables.py) ------------------
    def _check_arguments(  # noqa: C901, PLR0912
        self, spec: CallableSpec, owner: Global, args: object, kwargs: object, pos: int, depth: int
    ) -> None:
        """Check the arguments one call of an allowed callable receives against its spec."""
        bound: list[tuple[Param, object]] = []
        values: dict[str, object] = {}
        if type(args) is tuple:
            if spec.name == "builtins.iter" and len(args) < 2:
                return  # iter(obj) only iterates; iter(f, sentinel) calls f
            count = len(args)
            for index, param in spec.risky:
                if index < count:
                    bound.append((param, args[index]))
            varargs = spec.varargs
            if varargs is not None and varargs.effect is not Effect.DATA:
                bound.extend((varargs, value) for value in args[len(spec.params) :])
            if spec.needs_values:
                values = {param.name: value for param, value in zip(spec.params, args, strict=False)}
        elif isinstance(args, PSet):
            # The pure-Python reader spreads a set too (`func(*args)`), in an order string
            # hashing fixes only when the file is loaded: every item may land in every position.
            items = args.items
            bound.extend((param, item) for index, param in spec.risky if index < len(items) for item in items)
            varargs = spec.varargs
            if varargs is not None and varargs.effect is not Effect.DATA and len(items) > len(spec.params):
                bound.extend((varargs, item) for item in items)
        elif isinstance(args, (Result, Unknown, Persistent, Global)):
            # The arguments are made while loading: which value lands where cannot be known.
            owner.use(Use.UNVERIFIED, pos)
            return
        if isinstance(kwargs, PDict):
            for key, value in kwargs.items:
                keyword = spec.keyword(key) if isinstance(key, str) else spec.worst()
                if keyword is None:
                    continue
                if keyword is spec.varkw and keyword.effect is Effect.STATE:
                    # **kwargs applied with setattr (argparse.Namespace): the keys are the names.
                    self._check_state(owner, PDict([(key, value)]), pos)
                    continue
                bound.append((keyword, value))
                values[keyword.name] = value
        elif kwargs is not None and not isinstance(kwargs, (str, bytes, int, float, tuple, list)):
            owner.use(Use.UNVERIFIED, pos)
        for param, value in bound:
            effect = param.effect
            if effect is Effect.DATA:
                continue
            if effect in _CALLERS:
                self._callable_argument(param, value, values, owner, pos, depth)
            elif effect is Effect.INSTANTIATED:
                if isinstance(value, Global):
                    value.use(Use.RECONSTRUCT, pos)
                elif isinstance(value, (Result, Unknown, Persistent)):
                    self._observe(Event.CALL_ON_RESULT, pos, f"{owner.dotted} instantiates {_describe(value)}")
            elif effect is Effect.UNPICKLED:
                self._nested_pickle(owner, value, pos)
            elif effect is Effect.STATE:
                self._check_state(owner, value, pos)
            elif effect is Effect.IMPORTED:
                self._imported_name(owner, value, pos)
        if spec.name == "functools.partial" and type(args) is tuple and args:
            self._bound_arguments(args[0], args[1:], kwargs, pos, depth)

    def _callable_argument(  # noqa: C901, PLR0912
        self, param: Param, value: object, values: dict[str, object], owner: Global, pos: int, depth: int
    ) -> None:
        """An argument the callee calls, now or later: judge it as a call of that value."""
        if value is None or isinstance(value, (str, bytes, int, float, bool, LargeData)):
            return  # not callable: the load would raise TypeError, no code runs
        if isinstance(value, Global):
            if param.exempt and f"{canonical_module(value.module)}.{value.name}" in param.exempt:
                return
            value.use(Use.CALL, pos)
            inner = spec_for(value.module, value.name)
            if inner is None or inner.inert or depth >= _MAX_SPEC_DEPTH:
                return
            how = param.calls_with
            if how is CallArgs.NONE:
                self._check_arguments(inner, value, (), None, pos, depth + 1)
            elif how is CallArgs.SPREAD:
                spread = values.get(param.from_params[0], ())
                self._check_arguments(inner, value, spread, None, pos, depth + 1)
            elif how is CallArgs.PARAMS:
                passed = tuple(values[name] for name in param.from_params if name in values)
                self._check_arguments(inner, value, passed, None, pos, depth + 1)
            elif how is CallArgs.STREAM:
                self._check_arguments(inner, value, Unknown("items of an iterable"), None, pos, depth + 1)
            return
        if isinstance(value, Result):
            maker = value.func
            maker_name = f"{canonical_module(maker.module)}.{maker.name}" if isinstance(maker, Global) else ""
            if (
                maker_name == "functools.partial"
                and type(value.args) is tuple
                and value.args
                and depth < _MAX_SPEC_DEPTH
            ):
                # A partial was checked when it was built; what it wraps is what gets called.
                self._callable_argument(param, value.args[0], values, owner, pos, depth + 1)
                return
            if maker_name in _CONTAINERS and param.effect is Effect.STORED:
                if value.args == ():
                    return  # the empty OrderedDict every tensor carries as its backward hooks
                held: list[object] = []
                _flatten(value.args, held)
                for item in held:
                    if isinstance(item, (Global, Result, Unknown, Persistent)) and depth < _MAX_SPEC_DEPTH:
                        self._callable_argument(param, item, values, owner, pos, depth + 1)
                return
            self._observe(Event.CALL_ON_RESULT, pos, f"{owner.dotted} calls {_describe(value)}")
        elif isinstance(value, (Unknown, Persistent)):
            self._observe(Event.CALL_ON_RESULT, pos, f"{owner.dotted} calls {_describe(value)}")
        elif param.effect is Effect.STORED and isinstance(value, (list, tuple, PDict)) and depth < _MAX_SPEC_DEPTH:
            # A hooks dict or list: every value in it is called later.
            items = [v for _k, v in value.items] if isinstance(value, PDict) else list(value)
            for item in items:
                self._callable_argument(param, item, values, owner, pos, depth + 1)
            if not isinstance(value, tuple) and len(self.stored_containers) < _MAX_STORED_CONTAINERS:
                self.stored_containers.append((param, value, owner, pos))

    def _recheck_stored_containers(self) -> None:
        pending, self.stored_containers = self.stored_containers, []
        for param, container, owner, pos in pending:
            self._callable_argument(param, container, {}, owner, pos, _MAX_SPEC_DEPTH - 1)
        self.stored_containers = []
        partials, self.stored_partials = self.stored_partials, []
        for spec, func, keywords, pos in partials:
            self._check_arguments(spec, func, (), keywords, pos, _MAX_SPEC_DEPTH - 1)
        self.stored_partials = []
        for owner, state, pos in self.stored_states:
            keys = _setattr_keys(state)
            if keys:
                self._observe(Event.BUILD_DUNDER, pos, f"{owner.dotted} gets {', '.join(keys[:5])} after the call")
        self.stored_states = []

    def _bound_arguments(self, func: object, args: object, kwargs: object, pos: int, depth: int) -> None:
        """functools.partial(func, *args, **kwargs): func later receives these first."""
        if isinstance(func, Global) and depth < _MAX_SPEC_DEPTH:
            inner = spec_for(func.module, func.name)
            if inner is not None and not inner.inert:
                self._check_arguments(inner, func, args, kwargs, pos, depth + 1)
                if isinstance(kwargs, PDict) and len(self.stored_partials) < _MAX_STORED_CONTAINERS:
                    # The partial keeps this dict: keywords SETITEMS adds later are bound too.
                    self.stored_partials.append((inner, func, kwargs, pos))

    def _check_build_state(self, maker: Global, state: object, pos: int) -> None:
        spec = spec_for(maker.module, maker.name)
        if spec is None or spec.inert:
            return
        if spec.name == "functools.partial":
            # partial.__setstate__((func, args, kwds, namespace)) replaces everything.
            if type(state) is tuple and len(state) == 4:
                func, args, kwds = state[0], state[1], state[2]
                self._callable_argument(spec.params[0], func, {}, maker, pos, 0)
                self._bound_arguments(func, args, kwds, pos, 0)
            elif isinstance(state, (Result, Unknown, Persistent)):
                maker.use(Use.UNVERIFIED, pos)
            return
        if spec.state and isinstance(state, PDict):
            by_name = {p.name: p for p in spec.state}
            for key, value in state.items:
                param = by_name.get(key) if isinstance(key, str) else None
                if param is not None:
                    one = CallableSpec(
                        spec.name, (param,), None, (), None, spec.source, inert=False, risky=((0, param),)
                    )
                    self._check_arguments(one, maker, (value,), None, pos, 1)

    def _check_state(self, owner: Global, state: object, pos: int) -> None:
        """State an allowed callable applies with setattr or as `__dict__`."""
        if isinstance(state, (Result, Unknown, Persistent)):
            # Made while loading: whatever keys it has reach setattr unseen.
            owner.use(Use.UNVERIFIED, pos)
            return
        keys = _setattr_keys(state)
        if keys:
            self._observe(Event.BUILD_DUNDER, pos, f"{owner.dotted} sets {', '.join(keys[:5])}")
        elif isinstance(state, (PDict, tuple)) and len(self.stored_states) < _MAX_STORED_CONTAINERS:
            # A dict that becomes the object's __dict__ (_rebuild_from_type) may get a
            # __setstate__ by a later SETITEM, which the next BUILD then calls.
            self.stored_states.append((owner, state, pos))
        # Hooks set as attributes (a tensor's _backward_hooks, _post_accumulate_grad_hooks)
        # are called by later code: what they hold is judged as called.
        for part in (state[0], state[1]) if type(state) is tuple and len(state) == 2 else (state,):
            if isinstance(part, PDict):
                for key, value in part.items:
                    if isinstance(key, str) and key.endswith("hooks"):
                        self._callable_argument(_HOOKS, value, {}, owner, pos, 1)

    def _imported_name(self, owner: Global, value: object, pos: int) -> None:
        """A dotted name the callee imports at load time is judged as the global it names."""
        if isinstance(value, str):
            # "pkg.mod.name" imports pkg.mod and fetches name; a bare "pkg" imports a module,
            # whose import-time code is what runs.
            module, _, name = value.rpartition(".") if "." in value else (value, "", "__module__")
            imported = self._new_global(module, name, pos)
            if isinstance(imported, Global):
                imported.use(Use.CALL, pos)
        elif value is not None:
            self._observe(Event.COMPUTED_GLOBAL, pos, f"{owner.dotted} imports {_describe(value)}")

    def _nested_pickle(self, owner: Global, value: object, pos: int) -> None:
        """Bytes an allowed sink unpickles: scanned when they can be known, a finding when not."""
        data = _static_bytes(value, self.limits.max_inline_bytes)
        if data is None:
            owner.use(Use.OPAQUE_PICKLE, pos)
        elif self.on_embedded is not None and len(data) > 1:
            self.on_embedded(data, pos, owner.dotted)

    # -- the machine ---------------------------------------------------------------
    def run(self, src: ByteSource, on_quirk: Callable[[int, str], None] | None = None) -> Emulation:
        out = self.out

        def quirk(pos: int, detail: str) -> None:
            self._observe(Event.FRAME_QUIRK, pos, detail)
            if on_quirk is not None:
                on_quirk(pos, detail)

        try:
            if isinstance(src, MemorySource):
                self._run_memory(src, quirk)
            else:
                step = self._step
                for code, arg, pos in parse_opcodes(src, self.limits, quirk):
                    if step(code, arg, pos, src):
                        break
        except ArtifactError as err:
            out.error = err.message
            out.error_pos = src.tell()
            if isinstance(err, LimitExceeded):
                raise
        return out

    def _run_memory(self, src: MemorySource, quirk: Callable[[int, str], None]) -> None:  # noqa: C901, PLR0912, PLR0915
        """`parse_opcodes` and `_step` fused for a buffer: the opcodes real files are made of
        (small numbers, memo, floats, short strings, marks, empty containers, small tuples) are
        read and applied in place, without a tuple or a generator step each; any other opcode,
        or one of these in an irregular spot (truncated, underflow, a limit), takes the general
        reader and `_step`, which decide exactly as before."""
        limits = self.limits
        memo = self.memo
        metastack = self.metastack
        max_stack = limits.max_stack_items
        max_memo = limits.max_memo_entries
        max_marks = limits.max_open_marks
        budget = limits.max_pickle_opcodes
        frame = Frames(quirk)
        step = self._step
        buf, base, end = src.buf, src.start, src.end
        unpack_float = F8.unpack_from
        unpack_u4 = U4.unpack_from
        inline = limits.max_inline_bytes
        decimal_line = DECIMAL_LINE
        while True:
            here = src._pos  # the fast loop reads the window in place
            if here >= end:
                raise ArtifactError(f"{src.name}: truncated at byte {here - base}: the pickle has no STOP")
            budget -= 1
            if budget < 0:
                raise LimitExceeded(f"more than {limits.max_pickle_opcodes} opcodes")
            code = buf[here]
            stack = self.stack
            if code == 0x4B and here + 2 <= end:  # BININT1
                stack.append(buf[here + 1])
                after = here + 2
            elif code == 0x71 and here + 2 <= end and stack and len(memo) < max_memo:  # BINPUT
                memo[buf[here + 1]] = stack[-1]
                after = here + 2
            elif code == 0x94 and stack and len(memo) < max_memo:  # MEMOIZE
                memo[len(memo)] = stack[-1]
                after = here + 1
            elif code == 0x47 and here + 9 <= end:  # BINFLOAT
                stack.append(unpack_float(buf, here + 1)[0])
                after = here + 9
            elif code == 0x8C and here + 2 <= end and (after := here + 2 + buf[here + 1]) <= end:  # SHORT_BINUNICODE
                stack.append(decode_utf8(bytes(buf[here + 2 : after]), here - base))
            elif code == 0x28 and len(metastack) < max_marks:  # MARK
                metastack.append(stack)
                self.stack = []
                after = here + 1
            elif code == 0x68 and here + 2 <= end and buf[here + 1] in memo:  # BINGET
                stack.append(memo[buf[here + 1]])
                after = here + 2
            elif code in _EMPTY:  # EMPTY_LIST, EMPTY_DICT, EMPTY_TUPLE, NONE, NEWTRUE, NEWFALSE
                stack.append(_EMPTY[code]())
                after = here + 1
            elif code == 0x87 and len(stack) >= 3:  # TUPLE3
                stack[-3:] = [(stack[-3], stack[-2], stack[-1])]
                after = here + 1
            elif code == 0x86 and len(stack) >= 2:  # TUPLE2
                stack[-2:] = [(stack[-2], stack[-1])]
                after = here + 1
            elif code == 0x85 and stack:  # TUPLE1
                stack[-1] = (stack[-1],)
                after = here + 1
            elif (
                code == 0x58
                and here + 5 <= end
                and (size := unpack_u4(buf, here + 1)[0]) <= inline
                and (after := here + 5 + size) <= end
            ):  # BINUNICODE of an inline size
                stack.append(decode_utf8(bytes(buf[here + 5 : after]), here - base))
            elif code == 0x65 and metastack and metastack[-1] and type(metastack[-1][-1]) is list:  # APPENDS to a list
                outer = self.stack = metastack.pop()
                outer[-1].extend(stack)  # type: ignore[attr-defined]
                after = here + 1
            elif (
                code == 0x75 and metastack and metastack[-1] and type(metastack[-1][-1]) is PDict and not len(stack) % 2
            ):  # SETITEMS on a dict
                outer = self.stack = metastack.pop()
                outer[-1].items.extend(zip(stack[::2], stack[1::2], strict=True))  # type: ignore[attr-defined]
                after = here + 1
            elif code in (0x74, 0x6C) and metastack:  # TUPLE, LIST
                outer = self.stack = metastack.pop()
                outer.append(tuple(stack) if code == 0x74 else stack)
                after = here + 1
            elif (
                code in decimal_line
                and (plain := plain_decimal_at(buf, here, end)) is not None
                and (
                    code == 0x49
                    or (code == 0x70 and stack and len(memo) < max_memo)
                    or (code == 0x67 and plain[0] in memo)
                )
            ):  # INT, PUT, GET with a plain decimal line, as protocol 0 writes them
                number, after = plain
                if code == 0x49:
                    stack.append(number)
                elif code == 0x70:
                    memo[number] = stack[-1]
                else:
                    stack.append(memo[number])
            elif (
                code == 0x56
                and (nl := buf.find(b"\n", here + 1, min(end, here + 1 + MAX_LINE))) >= 0
                and buf.find(b"\\", here + 1, nl) < 0
            ):  # UNICODE without escapes: raw-unicode-escape is then latin-1
                stack.append(bytes(buf[here + 1 : nl]).decode("latin-1"))
                after = nl + 1
            elif code == 0x61 and len(stack) >= 2 and type(stack[-2]) is list:  # APPEND to a list
                value = stack.pop()
                stack[-1].append(value)  # type: ignore[attr-defined]
                after = here + 1
            elif code == 0x73 and len(stack) >= 3 and type(stack[-3]) is PDict:  # SETITEM on a dict
                value = stack.pop()
                key = stack.pop()
                stack[-1].items.append((key, value))  # type: ignore[attr-defined]
                after = here + 1
            else:
                pos = here - base
                arg = read_memory_arg(code, src, here, limits)
                if code in FRAME_CODES or (frame.active and (pos >= frame.end or src._pos - base > frame.end)):
                    frame.check(code, arg, pos, src._pos - base)
                if step(code, arg, pos, src):
                    return
                continue
            src._pos = after
            if frame.active and (here - base >= frame.end or after - base > frame.end):
                frame.check(code, None, here - base, after - base)
            if len(self.stack) > max_stack:
                raise LimitExceeded(f"more than {max_stack} items on the stack")

    def _step(self, code: int, arg: object, pos: int, src: ByteSource) -> bool:  # noqa: C901, PLR0912, PLR0915
        """Apply one opcode; True at STOP. The fast loop (`_run_memory`) handles the commonest
        opcodes itself, the same way, and brings every other one here."""
        out = self.out
        stack = self.stack
        memo = self.memo
        limits = self.limits
        max_stack = limits.max_stack_items
        max_memo = limits.max_memo_entries
        max_marks = limits.max_open_marks
        # Values ------------------------------------------------------------
        if code in _PUSH_ARG:
            stack.append(arg)
        elif code in (0x71, 0x72, 0x70):  # BINPUT, LONG_BINPUT, PUT
            if len(memo) >= max_memo:
                raise LimitExceeded(f"more than {max_memo} memo entries")
            if arg < 0:  # type: ignore[operator]  # PUT readers return an int
                raise ArtifactError(f"negative memo index at byte {pos}")
            memo[arg] = stack[-1] if stack else self._top()  # type: ignore[index]
        elif code == 0x94:  # MEMOIZE: index is the memo's current size
            if len(memo) >= max_memo:
                raise LimitExceeded(f"more than {max_memo} memo entries")
            memo[len(memo)] = stack[-1] if stack else self._top()
        elif code in (0x68, 0x6A, 0x67):  # BINGET, LONG_BINGET, GET
            try:
                stack.append(memo[arg])  # type: ignore[index]
            except KeyError:
                raise ArtifactError(f"memo key {arg!r} not defined at byte {pos}") from None
        elif code == 0x28:  # MARK
            # Each open MARK holds a list: count them, or a file of "(" fills memory.
            if len(self.metastack) >= max_marks:
                raise LimitExceeded(f"more than {max_marks} MARKs open at once")
            self.metastack.append(stack)
            self.stack = []
        elif code == 0x4E:  # NONE
            stack.append(None)
        elif code == 0x88:
            stack.append(True)
        elif code == 0x89:
            stack.append(False)
        elif code == 0x29:  # EMPTY_TUPLE
            stack.append(())
        elif code == 0x5D:  # EMPTY_LIST
            stack.append([])
        elif code == 0x7D:  # EMPTY_DICT
            stack.append(PDict())
        elif code == 0x8F:  # EMPTY_SET
            stack.append(PSet())
        elif code == 0x85:  # TUPLE1
            stack.append((self._pop(),))
        elif code == 0x86:  # TUPLE2
            if len(stack) >= 2:
                stack[-2:] = [(stack[-2], stack[-1])]
            else:
                b = self._pop()
                stack.append((self._pop(), b))
        elif code == 0x87:  # TUPLE3
            if len(stack) >= 3:
                stack[-3:] = [(stack[-3], stack[-2], stack[-1])]
            else:
                c = self._pop()
                b = self._pop()
                stack.append((self._pop(), b, c))
        elif code == 0x74:  # TUPLE
            items = self._pop_mark()
            self.stack.append(tuple(items))
        elif code == 0x6C:  # LIST
            items = self._pop_mark()
            self.stack.append(items)
        elif code == 0x64:  # DICT
            items = self._pop_mark()
            if len(items) % 2:
                raise ArtifactError(f"odd number of items for DICT at byte {pos}")
            self.stack.append(PDict(list(zip(items[::2], items[1::2], strict=True))))
        elif code == 0x91:  # FROZENSET
            items = self._pop_mark()
            self.stack.append(PSet(items, frozen=True))
        elif code == 0x96:  # BYTEARRAY8: mutable, so APPEND and SETITEM work on it
            stack.append(bytearray(arg) if isinstance(arg, bytes) else arg)
        elif code == 0x61 and len(stack) >= 2 and type(stack[-2]) is list:  # APPEND to a list
            value = stack.pop()
            stack[-1].append(value)  # type: ignore[attr-defined]
        elif code == 0x61:  # APPEND to anything else
            value = self._pop()
            target = self._top()
            self._item_method_on_result(target, pos, "APPEND")
            _extend(target, [value], pos)
        elif code == 0x65:  # APPENDS
            items = self._pop_mark()
            target = self._top_of(self.stack)
            if type(target) is list:
                target.extend(items)
            else:
                self._item_method_on_result(target, pos, "APPENDS")
                _extend(target, items, pos)
        elif code == 0x73 and len(stack) >= 3 and type(stack[-3]) is PDict:  # SETITEM on a dict
            value = stack.pop()
            key = stack.pop()
            stack[-1].items.append((key, value))  # type: ignore[attr-defined]
        elif code == 0x73:  # SETITEM on anything else
            value = self._pop()
            key = self._pop()
            target = self._top()
            self._item_method_on_result(target, pos, "SETITEM")
            _setitems(target, [(key, value)], pos)
        elif code == 0x75:  # SETITEMS
            items = self._pop_mark()
            target = self._top_of(self.stack)
            if type(target) is PDict and not len(items) % 2:
                target.items.extend(zip(items[::2], items[1::2], strict=True))
            else:
                self._item_method_on_result(target, pos, "SETITEMS")
                # The pure-Python reader stores the complete pairs before it trips on an
                # odd last item: the target (perhaps an imported object) is changed first.
                _setitems(target, list(zip(items[::2], items[1::2], strict=False)), pos)
                if len(items) % 2:
                    raise ArtifactError(f"odd number of items for SETITEMS at byte {pos}")
        elif code == 0x90:  # ADDITEMS
            items = self._pop_mark()
            _additems(self._top_of(self.stack), items, pos)
        elif code == 0x30:  # POP: with an empty stack CPython pops the mark instead
            if stack:
                stack.pop()
            else:
                self._pop_mark()
        elif code == 0x31:  # POP_MARK
            self._pop_mark()
        elif code == 0x32:  # DUP
            stack.append(self._top())
        # Names and calls ----------------------------------------------------
        elif code == 0x63:  # GLOBAL
            pair = cast(tuple[str, str], arg)  # the GLOBAL reader returns (module, name)
            stack.append(self._new_global(pair[0], pair[1], pos))
        elif code == 0x93:  # STACK_GLOBAL
            name = self._pop()
            module = self._pop()
            self.stack.append(self._new_global(module, name, pos))
        elif code == 0x52:  # REDUCE
            args = self._pop()
            func = self._pop()
            self.stack.append(self._call(func, _spread(args), pos, "reduce"))
        elif code == 0x81:  # NEWOBJ
            args = self._pop()
            cls = self._pop()
            self.stack.append(self._call(cls, _spread(args), pos, "newobj"))
        elif code == 0x92:  # NEWOBJ_EX
            kwargs = self._pop()
            args = self._pop()
            cls = self._pop()
            if isinstance(kwargs, Global):
                # The pure-Python reader spreads **kwargs: it calls the global's keys().
                kwargs.use(Use.CALL, pos)
            self.stack.append(self._call(cls, args, pos, "newobj", kwargs))
        elif code == 0x6F:  # OBJ: MARK cls args... OBJ
            items = self._pop_mark()
            if not items:
                raise ArtifactError(f"OBJ without a class at byte {pos}")
            self.stack.append(self._call(items[0], tuple(items[1:]), pos, "obj"))
        elif code == 0x69:  # INST: MARK args... INST module name
            # The pure-Python reader imports the name before it looks for the MARK.
            pair = cast(tuple[str, str], arg)  # the INST reader returns (module, name)
            cls = self._new_global(pair[0], pair[1], pos)
            items = self._pop_mark()
            self.stack.append(self._call(cls, tuple(items), pos, "inst"))
        elif code == 0x62:  # BUILD
            state = self._pop()
            target = self._top()
            self._build(target, state, pos)
            if self.after_build is not None:
                self.after_build(self, target, src, pos)
        elif code in (0x51, 0x50):  # BINPERSID, PERSID
            ref = Persistent(self._pop() if code == 0x51 else arg)
            out.persistent.append(ref)
            stack.append(ref)
        elif code in (0x82, 0x83, 0x84):  # EXT1, EXT2, EXT4
            self._observe(Event.EXTENSION, pos, f"extension code {arg}")
            stack.append(Unknown("extension"))
        elif code in (0x97, 0x98):  # NEXT_BUFFER, READONLY_BUFFER
            if code == 0x97:
                stack.append(Unknown("out-of-band buffer"))
            else:
                self._top()
        elif code == 0x80:  # PROTO
            out.protocol = arg  # type: ignore[assignment]
        elif code == 0x95:  # FRAME
            pass
        elif code == 0x2E:  # STOP
            out.value = self._pop()
            out.end = src.tell()
            self._recheck_stored_containers()
            return True
        else:  # pragma: no cover - parse_opcodes rejects unknown opcodes
            raise ArtifactError(f"unhandled opcode 0x{code:02x} at byte {pos}")
        if len(self.stack) > max_stack:
            raise LimitExceeded(f"more than {max_stack} items on the stack")
        return False

    def _item_method_on_result(self, target: object, pos: int, op: str) -> None:
        """APPEND/SETITEM on a rebuilt tensor: no pickler writes it, and the loader then calls the
        tensor's own __setitem__/append (in weights_only loaders a memory-safety bug, CVE-2026-24747)."""
        if (
            isinstance(target, Result)
            and isinstance(target.func, Global)
            and target.func.dotted.startswith(_TENSOR_RESULTS)
        ):
            self._observe(Event.CALL_ON_RESULT, pos, f"{op} on the tensor {target.func.dotted} rebuilds")

    def _top_of(self, stack: list[object]) -> object:
        if not stack:
            raise ArtifactError("stack underflow")
        return stack[-1]

    def _build(self, target: object, state: object, pos: int) -> None:
        if isinstance(target, Result):
            if target.state is None:
                target.state = state
            if isinstance(target.func, Global):
                self._check_build_state(target.func, state, pos)
                slot_state = state[1] if type(state) is tuple and len(state) == 2 else None
                if isinstance(slot_state, PDict):
                    # Applied with setattr, key by key: a property's setter runs for its name.
                    target.func.sets([k if isinstance(k, str) else "<computed name>" for k, _ in slot_state.items])
                elif isinstance(slot_state, (Result, Unknown, Persistent)):
                    target.func.sets(["<names made while loading>"])
        if isinstance(target, Global):
            target.use(Use.MUTATE, pos)
            self._observe(Event.BUILD_ON_GLOBAL, pos, target.dotted)
        # Without __setstate__, BUILD calls state.items() and slotstate.items(): an imported
        # object given as either has a method called (the C reader wants dicts there).
        parts = state if isinstance(state, tuple) and len(state) == 2 else (state,)
        for part in parts:
            if isinstance(part, Global):
                part.use(Use.CALL, pos)
        dunders = _dangerous_state_keys(state)
        if dunders:
            self._observe(Event.BUILD_DUNDER, pos, ", ".join(dunders[:5]))
        if isinstance(target, Global):
            # Names stored onto an imported object may be fetched back as attributes later.
            values: list[object] = []
            _flatten(state, values)
            for value in values:
                if isinstance(value, Global):
                    value.use(Use.MUTATE, pos)


def _setattr_keys(state: object) -> list[str]:
    """Special names in a state that an allowed callable applies with setattr or as `__dict__`.

    torch's `_set_obj_state` runs setattr for every key, so `__class__` re-types the object and
    `__setstate__` or `__reduce__` stored on it are what the next BUILD or pickling calls.
    """
    dict_state, slot_state = (state[0], state[1]) if type(state) is tuple and len(state) == 2 else (state, None)
    keys: list[str] = []
    for part in (dict_state, slot_state):
        if isinstance(part, PDict):
            keys.extend(k for k, _ in part.items if isinstance(k, str) and k.startswith("__"))
    return keys


def _static_bytes(value: object, limit: int, depth: int = 0) -> bytes | None:
    """The bytes a value is at load time, when only pure conversions of literals make them."""
    if isinstance(value, bytes):
        return value
    if depth > _MAX_SPEC_DEPTH or not isinstance(value, Result) or not isinstance(value.func, Global):
        return None
    args = value.args
    if type(args) is not tuple:
        return None
    name = f"{canonical_module(value.func.module)}.{value.func.name}"
    if name == "codecs.encode" and 1 <= len(args) <= 3 and isinstance(args[0], str):
        return _encoded(args[0], args[1] if len(args) > 1 else "utf-8", limit)
    # A bytearray is mutable: APPEND/APPENDS on it (bytearray.extend) change what a sink later
    # reads, so only immutable bytes are evaluated; a bytearray stays unanalysable.
    if name == "builtins.bytes":
        if not args:
            return b""
        first = args[0]
        if len(args) == 1 and type(first) in (list, tuple):
            ints = cast(list[object], list(first))
            if len(ints) <= limit and all(type(i) is int and 0 <= i < 256 for i in ints):
                return bytes(cast(list[int], ints))
            return None
        if len(args) == 1:
            return _static_bytes(first, limit, depth + 1)
        if isinstance(first, str) and len(args) <= 3:
            return _encoded(first, args[1], limit)
    return None


def _encoded(text: str, encoding: object, limit: int) -> bytes | None:
    codec = _TEXT_ENCODINGS.get(encoding.lower()) if isinstance(encoding, str) else None
    if codec is None:
        return None
    try:
        data = text.encode(codec)
    except UnicodeEncodeError:
        return None
    return data if len(data) <= limit else None


# What a real object stands for: a stand-in may be anything, so every method call on it
# succeeds as far as the emulation knows.
_STAND_INS = (Result, Unknown, Persistent)


def _extend(target: object, items: list[object], pos: int) -> None:
    # APPEND(S) calls target.extend, else target.append, on whatever the target is. With no
    # items the C unpickler returns before looking at the target, while the pure-Python one
    # still calls target.extend([]): on an imported object, that is a method call all the same.
    if isinstance(target, Global):
        # A module-level list (sys.path) grows: the stream changes an imported object.
        target.use(Use.MUTATE, pos)
    elif not items:
        return
    elif isinstance(target, list):
        target.extend(items)
    elif isinstance(target, bytearray):
        for item in items:
            if isinstance(item, int) and 0 <= item < 256:
                target.append(item)
            elif not isinstance(item, (*_STAND_INS, Global)):
                raise ArtifactError(f"APPEND of a {type(item).__name__} to a bytearray at byte {pos}")
    elif not isinstance(target, _STAND_INS) and not _is_large(target, "bytearray"):
        raise ArtifactError(f"APPEND to a {type(target).__name__} at byte {pos}")


def _setitems(target: object, pairs: list[tuple[object, object]], pos: int) -> None:
    # SETITEM(S) is `target[key] = value` on whatever the target is (PyObject_SetItem):
    # a dict, but also a list, a bytearray, or any object with __setitem__.
    if not pairs:
        return
    if isinstance(target, Global):
        target.use(Use.MUTATE, pos)
    elif isinstance(target, PDict):
        target.items.extend(pairs)
    elif isinstance(target, (list, bytearray)):
        for key, value in pairs:
            _set_sequence_item(target, key, value, pos)
    elif not isinstance(target, _STAND_INS) and not _is_large(target, "bytearray"):
        raise ArtifactError(f"SETITEM on a {type(target).__name__} at byte {pos}")


def _set_sequence_item(target: list[object] | bytearray, key: object, value: object, pos: int) -> None:
    unknown = (*_STAND_INS, Global)
    if isinstance(key, int):  # bool included, as list[True] is list[1]
        if not -len(target) <= key < len(target):
            raise ArtifactError(f"SETITEM index {key} out of range at byte {pos}")
        if isinstance(target, list):  # noqa: SIM114  # each arm narrows a different type for mypy
            target[key] = value
        elif isinstance(value, int) and 0 <= value < 256:
            target[key] = value
        elif not isinstance(value, unknown):
            raise ArtifactError(f"SETITEM of a {type(value).__name__} in a bytearray at byte {pos}")
    elif not isinstance(key, unknown):
        # A stand-in may be a slice or an int-like; anything else is a TypeError in CPython.
        raise ArtifactError(f"SETITEM with a {type(key).__name__} index at byte {pos}")


def _additems(target: object, items: list[object], pos: int) -> None:
    # ADDITEMS updates a set, else calls target.add per item; nothing happens with no items.
    if not items:
        return
    if isinstance(target, Global):
        target.use(Use.MUTATE, pos)
    elif isinstance(target, PSet) and not target.frozen:
        target.items.extend(items)
    elif not isinstance(target, _STAND_INS):
        raise ArtifactError(f"ADDITEMS on a {type(target).__name__} at byte {pos}")


def _spread(args: object) -> object:
    """The arguments a call receives: the pure-Python reader spreads any iterable (`func(*args)`).

    The C reader wants a tuple; joblib's reader takes a list or a dict's keys as well, so
    argument checks must see those as the positional arguments they become.
    """
    if isinstance(args, list):
        return tuple(args)
    if isinstance(args, PDict):
        return tuple(key for key, _ in args.items)
    return args


def _is_large(value: object, kind: str) -> bool:
    return isinstance(value, LargeData) and value.kind == kind


def _describe(value: object) -> str:
    depth = 0
    while isinstance(value, Result) and depth < 8:
        value, depth = value.func, depth + 1
    text = _describe_leaf(value)
    return (
        f"the result of {text}(...)"
        if depth == 1
        else (f"a call chain {depth} deep ending in {text}" if depth else text)
    )


def _describe_leaf(value: object) -> str:
    if isinstance(value, Global):
        return value.dotted
    if isinstance(value, Result):
        return "a longer call chain"
    if isinstance(value, (str, bytes)):
        return repr(value[:60])
    if isinstance(value, LargeData):
        return f"<{value.size} bytes>"
    return type(value).__name__


def emulate(
    src: ByteSource,
    limits: ScanLimits,
    on_embedded: EmbeddedSink | None = None,
    after_build: BuildHook | None = None,
) -> Emulation:
    """Emulate one pickle from the current position of `src` to its STOP.

    Returns the emulation even when the stream is malformed: `error` then says where it
    broke, and everything observed before that point is kept.

    Raises:
        LimitExceeded: a budget ran out (the caller reports the file as not analysed).
    """
    return Machine(limits, on_embedded, after_build).run(src)
