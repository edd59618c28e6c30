"""What every allowed callable does with its arguments: the specification catalogue.

A name on an allow-list says nothing about what the function does with what it is handed:
`torch._tensor._rebuild_from_type(func, type, args, dict)` calls `func(*args)`, NumPy's
random-state helper calls its `bit_generator_ctor`, `torch.storage._load_from_bytes`
unpickles its bytes. So the allow-list is this catalogue: one `CallableSpec` per exact
dotted name (never a prefix), each parameter marked with what the loader's real code does
with it (`Effect`), and the file and function that code lives in. The emulator applies the
spec to the arguments a pickle supplies (symbolic.Machine._check_arguments); rules asks
`spec_for` whether a name is allowed at all.

Signatures are written in a small language, one parameter per word:
    ``name``                  DATA: inert, only read as a value
    ``name:called(a b)``      called now with the values of parameters a and b
    ``name:called(args*)``    called now with the tuple in parameter `args` spread
    ``name:called()``         called now with no argument
    ``name:called(?)``        called now with values the stream supplies but that cannot be
                              pinned down (items of an iterable: map, filter, sorted's key)
    ``name:stored``           kept and called by later code with that code's own values
                              (functools.partial's func, defaultdict's default_factory,
                              a tensor's backward hooks)
    ``name:imported``         a dotted name resolved with an import at load time
    ``name:unpickled``        bytes handed to a nested unpickler
    ``name:instantiated``     a class whose instance is created (its `__new__` runs)
    ``name:state``            applied to an object with setattr / `__dict__` / `__setstate__`
    ``*name`` ``**name``      variadic parameters, with an effect like any other
    ``*``                     the parameters after it are keyword-only
"""

from __future__ import annotations

import dataclasses
import enum
import functools
from collections.abc import Iterator, MutableMapping
from dataclasses import dataclass
from typing import NamedTuple

# Python 2 names that CPython maps on load (pickle's fix_imports, _compat_pickle).
MODULE_ALIASES = {
    "__builtin__": "builtins",
    "copy_reg": "copyreg",
    "cPickle": "pickle",
    "_pickle": "pickle",
    "posix": "os",
    "nt": "os",
    "_operator": "operator",
    "_functools": "functools",
    "_io": "io",
    "httplib": "http.client",
    "urllib2": "urllib.request",
    "commands": "subprocess",
    "exceptions": "builtins",
    "_codecs": "codecs",
    "Queue": "queue",
    "cStringIO": "io",
    "StringIO": "io",
    "_posixsubprocess": "subprocess",
    "_winapi": "subprocess",
    "_sre": "re",
    "_socket": "socket",
    "_ssl": "ssl",
    "_ctypes": "ctypes",
    "_thread": "threading",
    "thread": "threading",
    "_lsprof": "cProfile",
    "_interpreters": "interpreters",
    "_xxsubinterpreters": "interpreters",
    "_multiprocessing": "multiprocessing",
    "_bootlocale": "locale",
    "_collections": "collections",
    "itertools": "itertools",
}


@functools.lru_cache(maxsize=8192)
def canonical_module(module: str) -> str:
    """The module a name really resolves to, after Python 2 and C-accelerator aliases."""
    head, _, rest = module.partition(".")
    alias = MODULE_ALIASES.get(module) or MODULE_ALIASES.get(head)
    if alias is None:
        return module
    return alias if module in MODULE_ALIASES else f"{alias}.{rest}"


class Effect(enum.Enum):
    """What a callable's real code does with one of its arguments."""

    DATA = "data"
    CALLED = "called"
    STORED = "stored"
    IMPORTED = "imported"
    UNPICKLED = "unpickled"
    INSTANTIATED = "instantiated"
    STATE = "state"


class CallArgs(enum.Enum):
    """Where the arguments of a CALLED parameter come from, when not other parameters."""

    NONE = "none"
    """Called with no argument."""
    STREAM = "stream"
    """Values the stream supplies that the emulator cannot pin down (items of an iterable)."""
    CALLER = "caller"
    """Values a later caller supplies (a model calling its activation with a tensor)."""
    SPREAD = "spread"
    """The tuple in one other parameter, spread as positional arguments."""
    PARAMS = "params"
    """The values of other parameters, in order."""


@dataclass(frozen=True, slots=True)
class Param:
    """One parameter: its name, what is done with it, and for calls what it is called with."""

    name: str
    effect: Effect = Effect.DATA
    calls_with: CallArgs = CallArgs.CALLER
    from_params: tuple[str, ...] = ()
    exempt: frozenset[str] = frozenset()
    """Names that are harmless here whatever the effect (copyreg's plain base classes)."""


@dataclass(frozen=True, slots=True)
class CallableSpec:
    """What one allowed callable does with each argument, and where that code lives."""

    name: str
    params: tuple[Param, ...]
    """Positional-or-keyword parameters, in order."""
    varargs: Param | None
    keyword_only: tuple[Param, ...]
    varkw: Param | None
    source: str
    """`file::function` of the code the effects were read from."""
    state: tuple[Param, ...] = ()
    """Keys of a BUILD state that the object's `__setstate__` treats specially."""
    note: str = ""
    inert: bool = True
    """True when no argument, whatever its value, reaches code (the common, fast case)."""
    risky: tuple[tuple[int, Param], ...] = ()
    """The positional parameters that are not DATA, with their index: all a call needs to look at."""
    needs_values: bool = False
    """True when a called parameter receives other parameters' values (so those must be bound)."""

    def all_params(self) -> tuple[Param, ...]:
        extra = tuple(p for p in (self.varargs, self.varkw) if p is not None)
        return self.params + self.keyword_only + extra

    def keyword(self, key: str) -> Param | None:
        """The parameter a keyword argument binds to (None: the call would raise TypeError)."""
        for p in self.params + self.keyword_only:
            if p.name == key:
                return p
        return self.varkw

    def worst(self) -> Param | None:
        """The most dangerous parameter, for arguments whose position cannot be known."""
        risky = [p for p in self.all_params() if p.effect is not Effect.DATA]
        return risky[0] if risky else None


# Bases that copyreg._reconstructor may call as `base.__init__(obj, state)` harmlessly.
HARMLESS_BASES = frozenset(
    {
        "builtins.object",
        "builtins.list",
        "builtins.dict",
        "builtins.int",
        "builtins.float",
        "builtins.str",
        "builtins.tuple",
        "builtins.set",
        "builtins.frozenset",
        "builtins.bytes",
        "builtins.bytearray",
        "builtins.complex",
    }
)


def _param(word: str) -> Param:
    name, _, effect_text = word.partition(":")
    if not effect_text:
        return Param(name)
    kind, _, call = effect_text.partition("(")
    effect = Effect(kind)
    if effect is Effect.STORED:
        return Param(name, effect, CallArgs.CALLER)
    if effect is not Effect.CALLED:
        return Param(name, effect)
    inner = call.rstrip(")").strip()
    if inner == "":
        return Param(name, effect, CallArgs.NONE)
    if inner == "?":
        return Param(name, effect, CallArgs.STREAM)
    if inner.endswith("*"):
        return Param(name, effect, CallArgs.SPREAD, (inner[:-1],))
    return Param(name, effect, CallArgs.PARAMS, tuple(inner.split()))


class _Entry(NamedTuple):
    """One catalogue row as written: parsed into a CallableSpec on first lookup."""

    name: str
    signature: str
    source: str
    state: str = ""
    note: str = ""
    exempt: frozenset[str] = frozenset()


def _spec(
    name: str, signature: str, source: str, *, state: str = "", note: str = "", exempt: frozenset[str] = frozenset()
) -> _Entry:
    return _Entry(name, signature, source, state, note, exempt)


def _parse(entry: _Entry) -> CallableSpec:
    name, signature, source, state, note, exempt = entry
    # Calls like `called(a b)` hold spaces: split on spaces outside parentheses.
    words: list[str] = []
    depth = 0
    current = ""
    for ch in signature + " ":
        depth += ch == "("
        depth -= ch == ")"
        if ch == " " and depth == 0:
            if current:
                words.append(current)
            current = ""
        else:
            current += ch
    params: list[Param] = []
    keyword_only: list[Param] = []
    varargs = varkw = None
    after_star = False
    for word in words:
        if word == "*":
            after_star = True
        elif word == "/":
            continue
        elif word.startswith("**"):
            varkw = _param(word[2:])
        elif word.startswith("*"):
            varargs = _param(word[1:])
            after_star = True
        elif after_star:
            keyword_only.append(_param(word))
        else:
            params.append(_param(word))
    if exempt:
        params = [dataclasses.replace(p, exempt=exempt) if p.effect is not Effect.DATA else p for p in params]
    state_params = tuple(_param(w) for w in state.split())
    spec = CallableSpec(name, tuple(params), varargs, tuple(keyword_only), varkw, source, state_params, note)
    inert = not state_params and all(p.effect is Effect.DATA for p in spec.all_params())
    risky = tuple((index, p) for index, p in enumerate(params) if p.effect is not Effect.DATA)
    needs_values = any(p.calls_with in (CallArgs.PARAMS, CallArgs.SPREAD) for p in spec.all_params())
    return dataclasses.replace(spec, inert=inert, risky=risky, needs_values=needs_values)


def _words(text: str) -> list[str]:
    return text.split()


def _each(names: str, signature: str, source: str) -> list[_Entry]:
    """Several callables that share one signature (dtypes, activations, helpers)."""
    return [_Entry(n, signature, source) for n in names.split()]


_PY = "cpython/Lib"
_TORCH = "torch"
_NP = "numpy"

_CATALOGUE: list[_Entry] = [
    # -- Plain data types (CPython Objects/*.c): they read values, never call them. ---------
    *_each(
        "builtins.set builtins.frozenset builtins.list builtins.tuple",
        "iterable",
        "Objects/*object.c: type constructors",
    ),
    _spec("builtins.dict", "*args **kwargs", "Objects/dictobject.c::dict_init"),
    _spec(
        "builtins.bytearray",
        "source encoding errors",
        "Objects/bytearrayobject.c::bytearray___init__",
        note="encoding is looked up in the stdlib `encodings` package only",
    ),
    _spec("builtins.bytes", "source encoding errors", "Objects/bytesobject.c::bytes_new"),
    _spec("builtins.str", "object encoding errors", "Objects/unicodeobject.c::unicode_new"),
    _spec("builtins.int", "x base", "Objects/longobject.c::long_new"),
    *_each("builtins.float builtins.bool", "x", "Objects/floatobject.c, boolobject.c"),
    _spec("builtins.complex", "real imag", "Objects/complexobject.c::complex_new"),
    _spec("builtins.slice", "start stop step", "Objects/sliceobject.c::slice_new"),
    _spec("builtins.range", "start stop step", "Objects/rangeobject.c::range_new"),
    _spec("builtins.len", "obj", "Python/bltinmodule.c::builtin_len"),
    _spec("builtins.object", "", "Objects/typeobject.c::object_new"),
    *_each("builtins.Ellipsis builtins.NotImplemented", "", "Python/bltinmodule.c: singletons, named as values"),
    _spec("collections.OrderedDict", "*args **kwargs", f"{_PY}/collections/__init__.py::OrderedDict.__init__"),
    _spec(
        "collections.defaultdict",
        "default_factory:stored *args **kwargs",
        "Modules/_collectionsmodule.c::defdict_init, defdict_missing",
        note="default_factory is called with no argument on every missing key",
    ),
    _spec("collections.Counter", "iterable **kwds", f"{_PY}/collections/__init__.py::Counter.__init__"),
    _spec("collections.deque", "iterable maxlen", "Modules/_collectionsmodule.c::deque_init"),
    _spec(
        "datetime.datetime",
        "year month day hour minute second microsecond tzinfo * fold",
        f"{_PY}/datetime.py::datetime.__new__",
    ),
    _spec("datetime.date", "year month day", f"{_PY}/datetime.py::date.__new__"),
    _spec("datetime.time", "hour minute second microsecond tzinfo * fold", f"{_PY}/datetime.py::time.__new__"),
    _spec(
        "datetime.timedelta",
        "days seconds microseconds milliseconds minutes hours weeks",
        f"{_PY}/datetime.py::timedelta.__new__",
    ),
    _spec("datetime.timezone", "offset name", f"{_PY}/datetime.py::timezone.__new__"),
    _spec("decimal.Decimal", "value context", f"{_PY}/_pydecimal.py::Decimal.__new__"),
    _spec("fractions.Fraction", "numerator denominator", f"{_PY}/fractions.py::Fraction.__new__"),
    _spec("uuid.UUID", "hex bytes bytes_le fields int version * is_safe", f"{_PY}/uuid.py::UUID.__init__"),
    *_each(
        "pathlib.PosixPath pathlib.WindowsPath pathlib.PurePosixPath pathlib.PureWindowsPath pathlib.Path",
        "*pathsegments",
        f"{_PY}/pathlib.py::PurePath.__new__",
    ),
    _spec(
        "types.SimpleNamespace",
        "**kwargs:state",
        "Objects/namespaceobject.c::namespace_init, namespace_reduce",
        note="pickled as (SimpleNamespace, (), __dict__); keywords are applied as attributes",
    ),
    _spec(
        "argparse.Namespace",
        "**kwargs:state",
        f"{_PY}/argparse.py::Namespace.__init__",
        note="each keyword is applied with setattr",
    ),
    _spec(
        "codecs.encode",
        "obj encoding errors",
        "Modules/_codecsmodule.c::_codecs_encode",
        note="encodings are found in the stdlib `encodings` package; CPython writes bytes this way for protocols 0-2",
    ),
    _spec(
        "copyreg._reconstructor",
        "cls:instantiated base:called(cls state) state",
        f"{_PY}/copyreg.py::_reconstructor",
        exempt=HARMLESS_BASES,
        note="base.__new__(cls, state) and base.__init__(obj, state) run",
    ),
    _spec("copyreg.__newobj__", "cls:instantiated *args", f"{_PY}/copyreg.py::__newobj__"),
    _spec("copyreg.__newobj_ex__", "cls:instantiated args kwargs", f"{_PY}/copyreg.py::__newobj_ex__"),
    _spec(
        "enum.Enum",
        "value names * module qualname type:instantiated start boundary",
        f"{_PY}/enum.py::EnumType.__call__",
        note="with names, creates a class whose base `type` runs its __init_subclass__",
    ),
    _spec("re._compile", "pattern flags", f"{_PY}/re/__init__.py::_compile"),
    _spec("zoneinfo.ZoneInfo", "key", f"{_PY}/zoneinfo/_zoneinfo.py::ZoneInfo.__new__"),
    _spec(
        "zoneinfo.ZoneInfo._unpickle",
        "key from_cache",
        f"{_PY}/zoneinfo/_zoneinfo.py::ZoneInfo._unpickle",
        note="CPython pickles it as getattr(ZoneInfo, '_unpickle')",
    ),
    *_each("ipaddress.IPv4Address ipaddress.IPv6Address", "address", f"{_PY}/ipaddress.py::_BaseAddress.__init__"),
    # Pickled as (cls, (str(self),)) by _IPAddressBase.__reduce__; __init__ parses the string
    # (or an int, bytes or tuple) with the module's own regex-free parsers.
    *_each(
        "ipaddress.IPv4Network ipaddress.IPv6Network",
        "address strict",
        f"{_PY}/ipaddress.py::_IPAddressBase.__reduce__, IPv4Network.__init__, IPv6Network.__init__",
    ),
    *_each(
        "ipaddress.IPv4Interface ipaddress.IPv6Interface",
        "address",
        f"{_PY}/ipaddress.py::_IPAddressBase.__reduce__, IPv4Interface.__init__, IPv6Interface.__init__",
    ),
    # -- Lazy iterator carriers: building one is calling its function (class 2). -------------
    _spec("builtins.map", "func:called(?) *iterables", "Python/bltinmodule.c::map_new, map_next"),
    _spec("builtins.filter", "function:called(?) iterable", "Python/bltinmodule.c::filter_new, filter_next"),
    _spec("builtins.sorted", "iterable / * key:called(?) reverse", "Python/bltinmodule.c::builtin_sorted"),
    *_each("builtins.min builtins.max", "*args * key:called(?) default", "Python/bltinmodule.c::min_max"),
    _spec(
        "builtins.iter",
        "object:called() sentinel",
        "Python/bltinmodule.c::builtin_iter, calliter_iternext",
        note="iter(f, sentinel) calls f() until it returns sentinel; iter(obj) alone only iterates obj",
    ),
    _spec("itertools.starmap", "function:called(?) iterable", "Modules/itertoolsmodule.c::starmap_next"),
    _spec("itertools.accumulate", "iterable func:called(?) * initial", "Modules/itertoolsmodule.c::accumulate_next"),
    _spec("itertools.groupby", "iterable key:called(?)", "Modules/itertoolsmodule.c::groupby_next"),
    *_each(
        "itertools.takewhile itertools.dropwhile itertools.filterfalse",
        "predicate:called(?) iterable",
        "Modules/itertoolsmodule.c::takewhile_next, dropwhile_next, filterfalse_next",
    ),
    _spec("functools.reduce", "function:called(?) iterable initial", "Modules/_functoolsmodule.c::functools_reduce"),
    _spec(
        "functools.partial",
        "func:stored *args **keywords",
        "Modules/_functoolsmodule.c::partial_new, partial_setstate",
        note="func is called later with the bound arguments first: the emulator checks them against func's own spec",
    ),
    # -- NumPy reconstruction (numpy 1 and 2 spellings). ---------------------------------------
    _spec(
        "numpy.ndarray",
        "shape dtype buffer offset strides order",
        f"{_NP}/_core/src/multiarray/arrayobject.c::array_new",
    ),
    _spec("numpy.dtype", "dtype align copy metadata", f"{_NP}/_core/src/multiarray/descriptor.c::arraydescr_new"),
    *_each(
        "numpy.core.multiarray._reconstruct numpy._core.multiarray._reconstruct",
        "subtype:instantiated shape dtype",
        f"{_NP}/_core/src/multiarray/multiarraymodule.c::array__reconstruct",
    ),
    *_each(
        "numpy.core.multiarray.scalar numpy._core.multiarray.scalar",
        "dtype obj",
        f"{_NP}/_core/src/multiarray/multiarraymodule.c::array_scalar",
    ),
    *_each(
        "numpy.core.numeric._frombuffer numpy._core.numeric._frombuffer",
        "buf dtype shape order axis_order",
        f"{_NP}/_core/numeric.py::_frombuffer (frombuffer refuses object dtypes: the bytes stay data)",
    ),
    _spec(
        "numpy.ma.core._mareconstruct",
        "subtype:instantiated baseclass:instantiated baseshape basetype",
        f"{_NP}/ma/core.py::_mareconstruct",
    ),
    _spec(
        "numpy.random._pickle.__randomstate_ctor",
        "bit_generator_name bit_generator_ctor:called(bit_generator_name)",
        f"{_NP}/random/_pickle.py::__randomstate_ctor",
    ),
    _spec(
        "numpy.random._pickle.__generator_ctor",
        "bit_generator_name bit_generator_ctor:called(bit_generator_name)",
        f"{_NP}/random/_pickle.py::__generator_ctor",
    ),
    _spec(
        "numpy.random._pickle.__bit_generator_ctor",
        "bit_generator:instantiated",
        f"{_NP}/random/_pickle.py::__bit_generator_ctor",
        note="a class is called with no argument; a string is looked up in a fixed table",
    ),
    _spec("numpy.random.mtrand.RandomState", "seed", f"{_NP}/random/mtrand.pyx::RandomState.__init__"),
    *_each(
        "numpy.random._mt19937.MT19937 numpy.random._pcg64.PCG64 numpy.random._pcg64.PCG64DXSM "
        "numpy.random._philox.Philox numpy.random._sfc64.SFC64",
        "seed",
        f"{_NP}/random/_mt19937.pyx etc.::BitGenerator.__init__",
    ),
    _spec("numpy.random._generator.Generator", "bit_generator", f"{_NP}/random/_generator.pyx::Generator.__init__"),
    _spec(
        "numpy.random.bit_generator.SeedSequence",
        "entropy * spawn_key pool_size n_children_spawned",
        f"{_NP}/random/bit_generator.pyx::SeedSequence.__init__",
    ),
    _spec("numpy.matrix", "data dtype copy", f"{_NP}/matrixlib/defmatrix.py::matrix.__new__"),
    _spec(
        "numpy.ma.core.MaskedArray",
        "data mask dtype copy subok ndmin fill_value keep_mask hard_mask shrink order",
        f"{_NP}/ma/core.py::MaskedArray.__new__",
    ),
    *_each(
        "numpy.recarray numpy.core.records.recarray numpy._core.records.recarray",
        "shape dtype buf offset strides formats names titles byteorder aligned order",
        f"{_NP}/_core/records.py::recarray.__new__",
    ),
    _spec("numpy.record", "*args", f"{_NP}/_core/records.py::record"),
    _spec(
        "scipy._lib.array_api_compat.numpy._aliases.asarray",
        "obj / * dtype device copy **kwargs",
        "scipy/_lib/array_api_compat/numpy/_aliases.py::asarray",
        note="np.array(obj, copy=copy, dtype=dtype, **kwargs); scipy's BSpline keeps it as its array "
        "namespace's asarray and calls it later with its own arrays",
    ),
    _spec(
        "numpy._core._internal._convert_to_stringdtype_kwargs",
        "coerce na_object",
        f"{_NP}/_core/_internal.py::_convert_to_stringdtype_kwargs (NumPy 2 StringDType)",
    ),
    *_each(
        " ".join(
            f"numpy.dtypes.{n}DType"
            for n in [
                "Bool",
                "Byte",
                "Bytes",
                "CLongDouble",
                "Complex128",
                "Complex64",
                "DateTime64",
                "Float16",
                "Float32",
                "Float64",
                "Int16",
                "Int32",
                "Int64",
                "Int8",
                "Int",
                "LongDouble",
                "LongLong",
                "Long",
                "Object",
                "Short",
                "Str",
                "String",
                "TimeDelta64",
                "UByte",
                "UInt16",
                "UInt32",
                "UInt64",
                "UInt8",
                "UInt",
                "ULong",
                "ULongLong",
                "UShort",
                "Void",
            ]
        ),
        "*args **kwargs",
        f"{_NP}/dtypes.py: DType classes",
    ),
    # -- PyTorch serialization (torch/_utils.py, torch/_tensor.py, torch/storage.py). --------
    _spec("torch._utils._rebuild_tensor", "storage storage_offset size stride", f"{_TORCH}/_utils.py::_rebuild_tensor"),
    _spec(
        "torch._utils._rebuild_tensor_v2",
        "storage storage_offset size stride requires_grad backward_hooks:stored metadata",
        f"{_TORCH}/_utils.py::_rebuild_tensor_v2",
        note="backward_hooks are called on backward()",
    ),
    _spec(
        "torch._utils._rebuild_tensor_v3",
        "storage storage_offset size stride requires_grad backward_hooks:stored dtype metadata",
        f"{_TORCH}/_utils.py::_rebuild_tensor_v3",
    ),
    _spec(
        "torch._utils._rebuild_parameter",
        "data requires_grad backward_hooks:stored",
        f"{_TORCH}/_utils.py::_rebuild_parameter",
    ),
    _spec(
        "torch._utils._rebuild_parameter_with_state",
        "data requires_grad backward_hooks:stored state:state",
        f"{_TORCH}/_utils.py::_rebuild_parameter_with_state, _set_obj_state",
        note="state is applied key by key with setattr",
    ),
    _spec("torch._utils._rebuild_sparse_tensor", "layout data", f"{_TORCH}/_utils.py::_rebuild_sparse_tensor"),
    _spec("torch._utils._rebuild_sparse_csr_tensor", "layout data", f"{_TORCH}/_utils.py (torch < 2.0)"),
    *_each(
        "torch._utils._rebuild_device_tensor_from_numpy torch._utils._rebuild_xla_tensor "
        "torch._utils._rebuild_mps_tensor torch._utils._rebuild_device_tensor_from_cpu_tensor",
        "data dtype device requires_grad",
        f"{_TORCH}/_utils.py::_rebuild_device_tensor_from_numpy",
    ),
    _spec(
        "torch._utils._rebuild_qtensor",
        "storage storage_offset size stride quantizer_params requires_grad backward_hooks:stored",
        f"{_TORCH}/_utils.py::_rebuild_qtensor",
    ),
    _spec(
        "torch._utils._rebuild_nested_tensor",
        "buffer sizes strides storage_offsets",
        f"{_TORCH}/_utils.py::_rebuild_nested_tensor",
    ),
    _spec(
        "torch._utils._rebuild_meta_tensor_no_storage",
        "dtype size stride requires_grad",
        f"{_TORCH}/_utils.py::_rebuild_meta_tensor_no_storage",
    ),
    _spec(
        "torch._utils._rebuild_wrapper_subclass",
        "cls:instantiated dtype size stride storage_offset layout device requires_grad",
        f"{_TORCH}/_utils.py::_rebuild_wrapper_subclass",
    ),
    _spec(
        "torch._tensor._rebuild_from_type",
        "func:called(args*) type:instantiated args dict:state",
        f"{_TORCH}/_tensor.py::_rebuild_from_type",
        note="func(*args).as_subclass(type); dict becomes __dict__",
    ),
    _spec(
        "torch._tensor._rebuild_from_type_v2",
        "func:called(args*) new_type:instantiated args state:state",
        f"{_TORCH}/_tensor.py::_rebuild_from_type_v2",
        note="state goes to __setstate__ or setattr",
    ),
    _spec("torch.serialization._get_layout", "name", f"{_TORCH}/serialization.py::_get_layout (a table lookup)"),
    _spec(
        "torch.storage._load_from_bytes",
        "b:unpickled",
        f"{_TORCH}/storage.py::_load_from_bytes",
        note="torch.load(io.BytesIO(b), weights_only=False)",
    ),
    _spec("torch.storage.UntypedStorage", "*args **kwargs", f"{_TORCH}/storage.py::UntypedStorage"),
    _spec(
        "torch.storage.TypedStorage",
        "*args * device dtype wrap_storage _internal",
        f"{_TORCH}/storage.py::TypedStorage.__new__",
    ),
    _spec("torch.device", "type index", "torch/csrc/Device.cpp::THPDevice_pynew"),
    _spec("torch.Size", "sizes", "torch/csrc/Size.cpp::THPSize_pynew"),
    _spec("torch.Tensor", "*args", f"{_TORCH}/_tensor.py::Tensor"),
    _spec("torch.nn.parameter.Parameter", "data requires_grad", f"{_TORCH}/nn/parameter.py::Parameter.__new__"),
    _spec("torch.nn.parameter.Buffer", "data * persistent", f"{_TORCH}/nn/parameter.py::Buffer.__new__"),
    _spec(
        "torch.nn.parameter.UninitializedParameter",
        "requires_grad device dtype",
        f"{_TORCH}/nn/parameter.py::UninitializedParameter.__new__",
    ),
    _spec("torch.torch_version.TorchVersion", "version", f"{_TORCH}/torch_version.py::TorchVersion"),
    *_each(
        "torch.jit._pickle.build_intlist torch.jit._pickle.build_tensorlist torch.jit._pickle.build_doublelist "
        "torch.jit._pickle.build_boollist torch.jit._pickle.build_tensor_from_id",
        "data",
        f"{_TORCH}/jit/_pickle.py: identity functions",
    ),
    _spec("torch.jit._pickle.restore_type_tag", "value type_str", f"{_TORCH}/jit/_pickle.py::restore_type_tag"),
    # Activations that models keep as functools.partial or as attributes (all read tensors only).
    *_each(
        "torch._C._nn.gelu torch._C._nn.softplus torch._C._nn.log_sigmoid torch._C._nn.elu torch._C._nn.hardtanh "
        "torch._C._nn.leaky_relu torch._C._nn.silu torch._C._nn.mish torch._C._nn.hardswish torch._C._nn.hardsigmoid",
        "*args **kwargs",
        "torch/csrc/autograd/generated/python_nn_functions.cpp",
    ),
    *_each(
        "torch._C._VariableFunctionsClass.tanh torch._C._VariableFunctionsClass.sigmoid "
        "torch._C._VariableFunctionsClass.relu torch._C._VariableFunctionsClass.prelu "
        "torch._C._VariableFunctionsClass.exp",
        "*args **kwargs",
        "torch/csrc/autograd/generated/python_torch_functions.cpp (pickled as getattr(_VariableFunctionsClass, name))",
    ),
    *_each(
        " ".join(
            f"torch.nn.functional.{n}"
            for n in [
                "relu",
                "relu6",
                "silu",
                "mish",
                "tanh",
                "sigmoid",
                "softmax",
                "log_softmax",
                "leaky_relu",
                "elu",
                "selu",
                "celu",
                "hardtanh",
                "hardswish",
                "hardsigmoid",
                "glu",
                "softsign",
                "tanhshrink",
                "softmin",
                "normalize",
                "dropout",
                "layer_norm",
                "rrelu",
                "_threshold",
                "threshold",
                "gelu",
                "softplus",
                "logsigmoid",
                "hardshrink",
                "softshrink",
            ]
        ),
        "*args **kwargs",
        f"{_TORCH}/nn/functional.py: activations read their tensor and numeric options only",
    ),
    # -- scikit-learn, joblib. ------------------------------------------------------------------
    _spec("sklearn.tree._tree.Tree", "n_features n_classes n_outputs", "sklearn/tree/_tree.pyx::Tree.__cinit__"),
    *_each(
        "sklearn.neighbors._kd_tree.KDTree sklearn.neighbors._ball_tree.BallTree",
        "data leaf_size metric **kwargs",
        "sklearn/neighbors/_binary_tree.pxi.tp::BinaryTree.__init__",
    ),
    *_each(
        "sklearn.neighbors._kd_tree.newObj sklearn.neighbors._ball_tree.newObj sklearn.neighbors._binary_tree.newObj "
        "sklearn.metrics._dist_metrics.newObj",
        "obj:instantiated",
        "sklearn/neighbors/_binary_tree.pxi.tp::newObj (obj.__new__(obj))",
    ),
    _spec("sklearn.utils._bunch.Bunch", "**kwargs", "sklearn/utils/_bunch.py::Bunch.__init__"),
    *_each(
        " ".join(
            f"sklearn._loss._loss.{n}"
            for n in [
                "CyAbsoluteError",
                "CyExponentialLoss",
                "CyHalfBinomialLoss",
                "CyHalfGammaLoss",
                "CyHalfMultinomialLoss",
                "CyHalfPoissonLoss",
                "CyHalfSquaredError",
                "CyHalfTweedieLoss",
                "CyHalfTweedieLossIdentity",
                "CyHuberLoss",
                "CyLossFunction",
                "CyPinballLoss",
            ]
        ),
        "*args",
        "sklearn/_loss/_loss.pyx.tp: Cython loss classes",
    ),
    _spec(
        "joblib.numpy_pickle.NumpyArrayWrapper",
        "subclass:instantiated shape order dtype allow_mmap numpy_array_alignment_bytes",
        "joblib/numpy_pickle.py::NumpyArrayWrapper.__init__, read_array",
        state="subclass:instantiated",
    ),
    _spec(
        "joblib.numpy_pickle.ZNDArrayWrapper",
        "filename init_args state",
        "joblib/numpy_pickle_compat.py::ZNDArrayWrapper",
    ),
    *_each(
        "joblib.numpy_pickle_utils.NDArrayWrapper joblib.numpy_pickle.NDArrayWrapper",
        "filename subclass:instantiated allow_mmap",
        "joblib/numpy_pickle_compat.py::NDArrayWrapper.__init__, read",
    ),
]

# scikit-learn's SGD losses rebuild by calling their class with one float (sklearn/linear_model/
# _sgd_fast.pyx.tp: `__reduce__` returns `Hinge, (self.threshold,)`).
_CATALOGUE += _each(
    " ".join(
        f"sklearn.linear_model._sgd_fast.{n}"
        for n in _words("Hinge SquaredHinge ModifiedHuber EpsilonInsensitive SquaredEpsilonInsensitive")
    ),
    "*args",
    "sklearn/linear_model/_sgd_fast.pyx.tp::<Loss>.__reduce__",
)

# pandas: what DataFrame, Series, Index, their dtypes and the time types pickle as.
_PD_OFFSETS = _words(
    "BDay BHalfYearBegin BHalfYearEnd BMonthBegin BMonthEnd BQuarterBegin BQuarterEnd BYearBegin BYearEnd "
    "BusinessDay BusinessHour BusinessMonthBegin BusinessMonthEnd CBMonthBegin CBMonthEnd CDay CustomBusinessDay "
    "CustomBusinessHour CustomBusinessMonthBegin CustomBusinessMonthEnd Day Easter FY5253 FY5253Quarter "
    "HalfYearBegin HalfYearEnd Hour LastWeekOfMonth Micro Milli Minute MonthBegin MonthEnd Nano QuarterBegin "
    "QuarterEnd Second SemiMonthBegin SemiMonthEnd Week WeekOfMonth YearBegin YearEnd DateOffset"
)
# The Index classes pandas' rebuild helpers receive, as pandas >= 3 (`pandas.Index`) and earlier
# versions (`pandas.core.indexes.base.Index`) write them: their constructors are pandas' own.
_PD_INDEX_CLASSES = frozenset(
    name
    for cls, module in (
        ("Index", "base"),
        ("RangeIndex", "range"),
        ("MultiIndex", "multi"),
        ("CategoricalIndex", "category"),
        ("DatetimeIndex", "datetimes"),
        ("TimedeltaIndex", "timedeltas"),
        ("PeriodIndex", "period"),
        ("IntervalIndex", "interval"),
    )
    for name in (f"pandas.{cls}", f"pandas.core.indexes.{module}.{cls}")
)
_CATALOGUE += [
    # `cls` is whatever class the stream names: the helper runs its `__new__` (or
    # `_simple_new`, `from_arrays`), so any class but pandas' own Index classes is a call
    # of that class's code, judged as one.
    _spec(
        "pandas.core.indexes.base._new_Index",
        "cls:called(?) d",
        "pandas/core/indexes/base.py::_new_Index",
        note="cls.__new__(cls, **d), or _new_PeriodIndex(cls, **d) for a PeriodIndex subclass",
        exempt=_PD_INDEX_CLASSES,
    ),
    _spec(
        "pandas.core.indexes.interval._new_IntervalIndex",
        "cls:called(?) d",
        "pandas/core/indexes/interval.py::_new_IntervalIndex",
        note="cls.from_arrays(**d)",
        exempt=_PD_INDEX_CLASSES,
    ),
    _spec(
        "pandas.core.indexes.datetimes._new_DatetimeIndex",
        "cls:called(?) d",
        "pandas/core/indexes/datetimes.py::_new_DatetimeIndex",
        note="cls._simple_new(dta, **d)",
        exempt=_PD_INDEX_CLASSES,
    ),
    _spec(
        "pandas.core.indexes.timedeltas._new_TimedeltaIndex",
        "cls:called(?) d",
        "pandas/core/indexes/timedeltas.py::_new_TimedeltaIndex",
        note="cls._simple_new(tda, **d)",
        exempt=_PD_INDEX_CLASSES,
    ),
    _spec(
        "pandas.core.indexes.period._new_PeriodIndex",
        "cls:called(?) **d",
        "pandas/core/indexes/period.py::_new_PeriodIndex",
        note="cls._simple_new(values, **d)",
        exempt=_PD_INDEX_CLASSES,
    ),
    *_each(
        "pandas.Interval pandas._libs.interval.Interval",
        "left right closed",
        "pandas/_libs/interval.pyi::Interval.__init__; Interval.__reduce__ gives (Interval, (left, right, closed))",
    ),
    _spec(
        "pandas._libs.internals._unpickle_block", "values placement ndim", "pandas/_libs/internals.pyx::_unpickle_block"
    ),
    _spec(
        "pandas.core.internals.managers.BlockManager",
        "blocks axes verify_integrity",
        "pandas/core/internals/managers.py::BlockManager.__init__",
    ),
    _spec(
        "pandas.core.internals.managers.SingleBlockManager",
        "block axis verify_integrity",
        "pandas/core/internals/managers.py::SingleBlockManager.__init__",
    ),
    _spec("pandas._libs.tslibs.nattype._nat_unpickle", "", "pandas/_libs/tslibs/nattype.pyx::_nat_unpickle"),
    _spec(
        "pandas._libs.tslibs.timedeltas._timedelta_unpickle",
        "value reso",
        "pandas/_libs/tslibs/timedeltas.pyx::_timedelta_unpickle",
    ),
    _spec(
        "pandas._libs.tslibs.timestamps._unpickle_timestamp",
        "value freq tz reso",
        "pandas/_libs/tslibs/timestamps.pyx::_unpickle_timestamp",
    ),
    _spec("pandas.StringDtype", "storage na_value", "pandas/core/arrays/string_.py::StringDtype.__init__"),
    _spec("pandas.PeriodDtype", "freq", "pandas/core/dtypes/dtypes.py::PeriodDtype.__new__"),
    _spec(
        "pandas.Period",
        "value freq ordinal year month quarter day hour minute second",
        "pandas/_libs/tslibs/period.pyx::Period.__new__",
    ),
    _spec(
        "pandas._libs.sparse.IntIndex", "length indices check_integrity", "pandas/_libs/sparse.pyx::IntIndex.__init__"
    ),
    _spec("pandas._libs.sparse.BlockIndex", "length blocs blengths", "pandas/_libs/sparse.pyx::BlockIndex.__init__"),
    *_each(
        " ".join(f"pandas._libs.tslibs.offsets.{n}" for n in _PD_OFFSETS),
        "*args **kwargs",
        "pandas/_libs/tslibs/offsets.pyx::BaseOffset.__reduce__ (numbers, dates, calendars)",
    ),
]

# torch.ao.quantization: a QConfig holds partials of observer and fake-quantize classes
# (`MinMaxObserver.with_args(...)`), which prepare() calls to build each observer module.
_OBSERVERS = _words(
    "MinMaxObserver MovingAverageMinMaxObserver PerChannelMinMaxObserver MovingAveragePerChannelMinMaxObserver "
    "HistogramObserver PlaceholderObserver RecordingObserver NoopObserver FixedQParamsObserver ReuseInputObserver"
)
_CATALOGUE += [
    *_each(
        " ".join(f"torch.ao.quantization.observer.{n}" for n in _OBSERVERS),
        "*args **kwargs",
        "torch/ao/quantization/observer.py::<Observer>.__init__ (dtypes, ranges, numbers)",
    ),
    _spec(
        "torch.ao.quantization.fake_quantize.FakeQuantize",
        "observer:called(?) quant_min quant_max is_dynamic **observer_kwargs",
        "torch/ao/quantization/fake_quantize.py::FakeQuantize.__init__",
        note="self.activation_post_process = observer(**observer_kwargs)",
    ),
    _spec(
        "torch.ao.quantization.fake_quantize.FixedQParamsFakeQuantize",
        "observer:called(?)",
        "torch/ao/quantization/fake_quantize.py::FixedQParamsFakeQuantize.__init__",
    ),
    _spec(
        "torch.ao.quantization.fake_quantize.FusedMovingAvgObsFakeQuantize",
        "observer:called(?) quant_min quant_max **observer_kwargs",
        "torch/ao/quantization/fake_quantize.py::FusedMovingAvgObsFakeQuantize.__init__",
    ),
]

# torch.return_types: structseqs (values, indices ...) that torch.max, sort, topk return;
# pickled as a REDUCE of the class on one tuple (torch/csrc/utils/structseq.cpp).
_RETURN_TYPES = _words(
    "aminmax aminmax_out cummax cummax_out cummin cummin_out frexp frexp_out geqrf geqrf_out histogram "
    "histogram_out histogramdd kthvalue kthvalue_out linalg_cholesky_ex linalg_cholesky_ex_out "
    "linalg_eig linalg_eig_out linalg_eigh linalg_eigh_out linalg_inv_ex linalg_inv_ex_out "
    "linalg_ldl_factor linalg_ldl_factor_ex linalg_ldl_factor_ex_out linalg_ldl_factor_out linalg_lstsq "
    "linalg_lstsq_out linalg_lu linalg_lu_factor linalg_lu_factor_ex linalg_lu_factor_ex_out "
    "linalg_lu_factor_out linalg_lu_out linalg_qr linalg_qr_out linalg_slogdet linalg_slogdet_out "
    "linalg_solve_ex linalg_solve_ex_out linalg_svd linalg_svd_out lu_unpack lu_unpack_out max max_out "
    "median median_out min min_out mode mode_out nanmedian nanmedian_out qr qr_out slogdet slogdet_out "
    "sort sort_out svd svd_out topk topk_out triangular_solve triangular_solve_out "
)
_CATALOGUE += _each(
    " ".join(f"torch.return_types.{n}" for n in _RETURN_TYPES),
    "sequence dict",
    "torch/return_types.py, torch/csrc/utils/structseq.cpp: a tuple of tensors",
)

# torch.<name> values that pickles name (dtypes, layouts, legacy storage classes).
_TORCH_VALUES = [
    "FloatStorage",
    "DoubleStorage",
    "HalfStorage",
    "BFloat16Storage",
    "LongStorage",
    "IntStorage",
    "ShortStorage",
    "CharStorage",
    "ByteStorage",
    "BoolStorage",
    "ComplexFloatStorage",
    "ComplexDoubleStorage",
    "QInt8Storage",
    "QUInt8Storage",
    "QInt32Storage",
    "QUInt4x2Storage",
    "QUInt2x4Storage",
    "UntypedStorage",
    "float32",
    "float",
    "float64",
    "double",
    "float16",
    "half",
    "bfloat16",
    "int64",
    "long",
    "int32",
    "int",
    "int16",
    "short",
    "int8",
    "uint8",
    "bool",
    "complex64",
    "cfloat",
    "complex128",
    "cdouble",
    "complex32",
    "chalf",
    "qint8",
    "quint8",
    "qint32",
    "quint4x2",
    "quint2x4",
    "float8_e4m3fn",
    "float8_e5m2",
    "float8_e4m3fnuz",
    "float8_e5m2fnuz",
    "uint16",
    "uint32",
    "uint64",
    "bits8",
    "bits16",
    "strided",
    "sparse_coo",
    "sparse_csr",
    "sparse_csc",
    "sparse_bsr",
    "sparse_bsc",
    "_mkldnn",
    "contiguous_format",
    "channels_last",
    "channels_last_3d",
    "preserve_format",
    "per_tensor_affine",
    "per_channel_affine",
    "per_tensor_symmetric",
    "per_channel_symmetric",
    "per_channel_affine_float_qparams",
    "dtype",
    "layout",
]
_CATALOGUE += _each(
    " ".join(f"torch.{n}" for n in _TORCH_VALUES),
    "*args",
    "torch/__init__.py: dtypes, layouts, qschemes and legacy storage classes (data)",
)

# Cython's generated `__pyx_unpickle_<Class>(type, checksum, state)`: `<Class>.__new__(type)`,
# then the state fills typed fields and, when the object has one, its `__dict__`.
# Generated from the installed wheels (tests/scan/pickle/test_catalogue.py keeps it current).
_CYTHON_UNPICKLERS: dict[str, str] = {
    "numpy.random.bit_generator": "SeedSequence SeedlessSeedSequence",
    "pandas._libs.arrays": "NDArrayBacked",
    "pandas._libs.hashtable": "HashTable",
    "pandas._libs.index": (
        "BaseMultiIndexCodesEngine BoolEngine Complex128Engine Complex64Engine "
        "DatetimeEngine ExtensionEngine Float32Engine Float64Engine IndexEngine "
        "Int16Engine Int32Engine Int64Engine Int8Engine MaskedBoolEngine "
        "MaskedComplex128Engine MaskedComplex64Engine MaskedFloat32Engine "
        "MaskedFloat64Engine MaskedIndexEngine MaskedInt16Engine MaskedInt32Engine "
        "MaskedInt64Engine MaskedInt8Engine MaskedUInt16Engine MaskedUInt32Engine "
        "MaskedUInt64Engine MaskedUInt8Engine ObjectEngine PeriodEngine SharedEngine "
        "StringEngine StringObjectEngine TimedeltaEngine UInt16Engine UInt32Engine "
        "UInt64Engine UInt8Engine "
    ),
    "pandas._libs.indexing": "NDFrameIndexerBase",
    "pandas._libs.interval": (
        "Float64ClosedBothIntervalNode Float64ClosedLeftIntervalNode "
        "Float64ClosedNeitherIntervalNode Float64ClosedRightIntervalNode "
        "Int64ClosedBothIntervalNode Int64ClosedLeftIntervalNode "
        "Int64ClosedNeitherIntervalNode Int64ClosedRightIntervalNode IntervalMixin "
        "IntervalNode IntervalTree Uint64ClosedBothIntervalNode "
        "Uint64ClosedLeftIntervalNode Uint64ClosedNeitherIntervalNode "
        "Uint64ClosedRightIntervalNode "
    ),
    "pandas._libs.missing": "C_NAType",
    "pandas._libs.properties": "AxisProperty CachedProperty",
    "pandas._libs.sparse": "BlockMerge BlockUnion SparseIndex",
    "pandas._libs.tslibs.base": "ABCTimestamp",
    "pandas._libs.tslibs.nattype": "_NaT",
    "pandas._libs.tslibs.offsets": "BaseOffset",
    "pandas._libs.tslibs.period": "PeriodMixin",
    "pandas._libs.tslibs.timedeltas": "_Timedelta",
    "scipy.cluster._hierarchy": "Heap LinkageUnionFind",
    "scipy.io.matlab._mio5_utils": "VarHeader5",
    "scipy.io.matlab._streams": "GenericStream ZlibInputStream",
    "scipy.optimize._bglu_dense": "BGLU LU",
    "scipy.spatial._ckdtree": "cKDTreeNode",
    "scipy.stats._unuran.unuran_wrapper": "_URNG",
    "sklearn._loss._loss": "CyHalfMultinomialLoss",
    "sklearn.cluster._hdbscan._tree": "TreeUnionFind",
    "sklearn.cluster._hierarchical_fast": "UnionFind WeightedEdge",
    "sklearn.ensemble._hist_gradient_boosting.histogram": "HistogramBuilder",
    "sklearn.ensemble._hist_gradient_boosting.splitting": "Splitter",
    "sklearn.linear_model._sgd_fast": "Classification Regression",
    "sklearn.metrics._dist_metrics": "DistanceMetric",
    "sklearn.metrics._pairwise_distances_reduction._base": "BaseDistancesReduction32 BaseDistancesReduction64",
    "sklearn.metrics._pairwise_distances_reduction._datasets_pair": (
        "DatasetsPair32 DatasetsPair64 DenseDenseDatasetsPair32 DenseDenseDatasetsPair64 "
        "DenseSparseDatasetsPair32 DenseSparseDatasetsPair64 SparseDenseDatasetsPair32 "
        "SparseDenseDatasetsPair64 SparseSparseDatasetsPair32 SparseSparseDatasetsPair64 "
    ),
    "sklearn.metrics._pairwise_distances_reduction._middle_term_computer": (
        "DenseDenseMiddleTermComputer32 DenseDenseMiddleTermComputer64 "
        "MiddleTermComputer32 MiddleTermComputer64 SparseDenseMiddleTermComputer32 "
        "SparseDenseMiddleTermComputer64 SparseSparseMiddleTermComputer32 "
        "SparseSparseMiddleTermComputer64 "
    ),
    "sklearn.tree._criterion": "Criterion",
    "sklearn.tree._partitioner": "DensePartitioner SparsePartitioner",
    "sklearn.tree._tree": "TreeBuilder _CCPPruneController",
    "sklearn.utils._fast_dict": "IntFloatDict",
    "sklearn.utils._vector_sentinel": (
        "StdVectorSentinel StdVectorSentinelFloat64 StdVectorSentinelInt32 "
        "StdVectorSentinelInt64 StdVectorSentinelIntP "
    ),
}
_CATALOGUE += [
    _spec(
        f"{module}.__pyx_unpickle_{name}",
        "__pyx_type:instantiated __pyx_checksum __pyx_state:state",
        "Cython generated code: __pyx_unpickle_<Class>, __pyx_unpickle_<Class>__set_state",
    )
    for module, names in _CYTHON_UNPICKLERS.items()
    for name in names.split()
]


class _LazyCatalogue(MutableMapping[str, CallableSpec]):
    """The catalogue by exact dotted name, each row parsed on its first lookup.

    Parsing all rows costs more than the rest of `bastion scan`'s start-up, and a scan looks
    up a handful; a parsed spec replaces its row, so each is parsed once.
    """

    def __init__(self, entries: list[_Entry]) -> None:
        self._rows: dict[str, _Entry | CallableSpec] = {e.name: e for e in entries}

    def __getitem__(self, name: str) -> CallableSpec:
        row = self._rows[name]
        if isinstance(row, _Entry):
            row = self._rows[name] = _parse(row)
        return row

    def get(self, name: str, default: CallableSpec | None = None) -> CallableSpec | None:  # type: ignore[override]  # narrower than Mapping.get's overloads, same behaviour
        return self[name] if name in self._rows else default

    def __setitem__(self, name: str, spec: CallableSpec) -> None:
        self._rows[name] = spec

    def __delitem__(self, name: str) -> None:
        del self._rows[name]

    def __contains__(self, name: object) -> bool:
        return name in self._rows

    def __iter__(self) -> Iterator[str]:
        return iter(self._rows)

    def __len__(self) -> int:
        return len(self._rows)


CATALOGUE: MutableMapping[str, CallableSpec] = _LazyCatalogue(_CATALOGUE)
"""Every allowed callable by exact dotted name (parsed on first lookup)."""

# Allowed although their module is on the deny-list: the spec, not the module, decides.
DENIED_MODULE_EXCEPTIONS = frozenset({"functools.partial", "functools.reduce", "types.SimpleNamespace"})


@functools.lru_cache(maxsize=8192)
def spec_for(module: str, name: str) -> CallableSpec | None:
    """The specification of `module.name` after module aliases, or None when it is not allowed."""
    spec = CATALOGUE.get(f"{module}.{name}")
    if spec is None:
        spec = CATALOGUE.get(f"{canonical_module(module)}.{name}")
    return spec
