"""Write src/bastion/scan/pickle/known_classes.py: what the classes real checkpoints name ARE.

The scanner judges a REDUCE by what its callee does with the arguments. For classes, that is a
property of the class that the libraries themselves can tell us, so this script imports them (the
scanner never does), walks their modules and records, by the name pickle writes
(`module:qualname`):

- ENUMS: Enum classes with each member's value. `Cls(value)` for a value that IS a member's
  value returns that member from `_value2member_map_` (a dict lookup on a built-in scalar) and
  never reaches `_missing_` or any `__new__` the class defines; classes whose metaclass replaces
  `EnumType.__call__`, or whose `__new__` is not `Enum.__new__`, are left out.
- STRUCTSEQS: C struct-sequence types (torch.return_types): calling one with a literal
  sequence (and a literal dict) only builds the tuple.
- PLAIN_CLASSES: classes whose rebuilding (NEWOBJ: `object.__new__`; BUILD: a `__dict__` update
  or plain setattr) runs no code of the class: no `__new__`, `__setstate__`, `__setattr__`,
  `__getattr__` or `__getattribute__` of their own, unless that hook is in REVIEWED_HOOKS (read
  by a person, pinned by a digest of its source).
- SETTERS: for plain classes, the attribute names whose assignment runs the class's code (a
  property with a setter, any descriptor whose `__set__` is Python). BUILD applies slot state
  with setattr, so a stream that sets one of these runs that code: it is judged as a call.
- ALIASES: a library's public names for classes it defines under a prefix the scanner already
  trusts for rebuilding (pandas 3 pickles `pandas.core.frame.DataFrame` as `pandas.DataFrame`).
- SCALAR_CLASSES: compiled classes in the reviewed modules below whose pickled form is
  `(cls, (numbers...))` and whose construction from numbers only stores them (scikit-learn's
  SGD loss objects); the arity is recorded.
- INERT_CALL_CLASSES: reviewed classes whose call with any arguments only stores them.

Classes already trusted by prefix, and names the rules call dangerous, are not recorded.

Usage: PYTHONPATH=src python scripts/gen_known_classes.py [--check]
"""

from __future__ import annotations

import argparse
import dataclasses
import enum
import hashlib
import importlib
import inspect
import io
import logging
import os
import pickle  # whichmodule only: nothing is unpickled here
import pkgutil
import platform
import re
import sys
import types
import warnings
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from bastion.scan.pickle.rules import TRUSTED_CLASS_PREFIXES, is_dangerous

OUT = Path(__file__).resolve().parents[1] / "src" / "bastion" / "scan" / "pickle" / "known_classes.py"

# (distribution name for the version, import name)
LIBRARIES = (
    ("torch", "torch"),
    ("transformers", "transformers"),
    ("accelerate", "accelerate"),
    ("scikit-learn", "sklearn"),
    ("numpy", "numpy"),
    ("pandas", "pandas"),
    ("pytorch-lightning", "pytorch_lightning"),
    ("lightning-fabric", "lightning_fabric"),
    ("torchmetrics", "torchmetrics"),
    # scikit-learn's estimators hold SciPy objects (SplineTransformer keeps a BSpline).
    ("scipy", "scipy"),
)
# Standard-library modules whose enums checkpoints hold (re.RegexFlag of a compiled pattern).
STDLIB_MODULES = ("enum", "re", "uuid", "datetime", "decimal", "fractions", "pathlib", "ipaddress", "argparse")

# Subpackages not walked: per-model code (thousands of modules, one architecture each) and
# code that is never imported by a checkpoint (tests, benchmarks, optional back-ends).
_SKIP_PARTS = frozenset({"tests", "test", "testing", "_testing", "benchmarks", "conftest"})
_SKIP_PREFIXES = (
    "transformers.models.",
    "transformers.commands",
    "transformers.kernels",
    "transformers.integrations.",
    "torch._inductor",
    "torch._dynamo",
    "torch.utils.tensorboard",
    "torch.onnx",
    "torch.testing",
    "torch.distributed.elastic.",
    "torch.distributed.rpc",
    "torch._functorch",
    "numpy.f2py",
    "numpy.distutils",
    "pandas.io.clipboard",
    "pandas.plotting",
)

# Compiled classes whose construction from numbers only stores them: read in scikit-learn's
# sources (sklearn/linear_model/_sgd_fast.pyx.tp: each loss keeps its threshold/epsilon/c;
# sklearn/_loss/_loss.pyx.tp: CyHuberLoss keeps delta, CyPinballLoss quantile, ...).
SCALAR_CLASS_MODULES = ("sklearn.linear_model._sgd_fast", "sklearn._loss._loss")

# Classes whose call with any arguments only stores them (reviewed):
INERT_CALL_CLASSES = {
    # namespace_new/namespace_init (Objects/namespaceobject.c): positional arguments raise,
    # keywords become attributes; pickled as REDUCE(cls, ()) then BUILD with its __dict__.
    "types:SimpleNamespace": "stores keyword arguments as attributes; positional ones raise TypeError",
}

# Hooks that run during rebuilding, read and found inert; the digest pins the source that was read.
REVIEWED_HOOKS: dict[str, str] = {
    # Raises AttributeError with a message; BUILD looks `__setstate__` up through it.
    "accelerate.state:PartialState.__getattr__": "sha256:75daa30eaa56c70a",
    "accelerate.state:AcceleratorState.__getattr__": "sha256:832cc82bd5103ddf",
}
# Hooks the standard library generates for dataclasses (frozen __setattr__ raises; slots
# __setstate__ sets each field with object.__setattr__), recognised by their qualified name.
_DATACLASS_HOOKS = frozenset({"_dataclass_setstate", "_frozen_get_del_attr.<locals>.__setattr__"})

_DATACLASS_WRITTEN = frozenset({"__eq__", "__hash__", "__setattr__"})
_SCALARS = (str, int, float, bool, bytes, type(None))
# Hooks that loading (NEWOBJ, BUILD, SETITEMS into a dict or set) or collecting the object runs.
_HOOKS = ("__new__", "__setstate__", "__setattr__", "__getattr__", "__getattribute__", "__del__", "__hash__", "__eq__")
_CONTAINER_HOOKS = {
    dict: ("__setitem__", "update", "setdefault"),
    list: ("append", "extend", "__setitem__"),
    set: ("add", "update"),
}
_log = logging.getLogger("gen_known_classes")


def _walk(package: str) -> Iterator[types.ModuleType]:
    try:
        root = importlib.import_module(package)
    except Exception as err:  # a library that will not import is reported, not fatal
        _log.warning("cannot import %s: %s", package, err)
        return
    yield root
    path = getattr(root, "__path__", None)
    if path is None:
        return
    for info in pkgutil.walk_packages(path, package + ".", onerror=lambda _name: None):
        name = info.name
        if _SKIP_PARTS & set(name.split(".")) or name.startswith(_SKIP_PREFIXES) or name.endswith("__main__"):
            continue
        module_part, _, leaf = name.rpartition(".")
        if is_dangerous(module_part, leaf):
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                yield importlib.import_module(name)
        except BaseException as err:  # optional back-ends fail to import; skip them
            if isinstance(err, KeyboardInterrupt):
                raise
            _log.debug("skip %s: %s", name, err)


def _pickled_name(cls: type) -> str | None:
    """The `module:qualname` pickle writes for `cls`, if it resolves back to `cls`."""
    module, qualname = getattr(cls, "__module__", None), getattr(cls, "__qualname__", None)
    if not isinstance(module, str) or not isinstance(qualname, str) or "<" in qualname:
        return None
    obj: object = sys.modules.get(module)
    for part in qualname.split("."):
        obj = getattr(obj, part, None)
    return f"{module}:{qualname}" if obj is cls else None


def _defining_module(cls: type, found_in: types.ModuleType) -> str | None:
    """The module whose source file defines `cls` (pandas 3 rewrites `__module__` to "pandas")."""
    # inspect.getfile trusts `__module__`; the code of the class's own functions does not lie.
    # Decorators may wrap a few methods with functions from elsewhere: the most common file wins.
    files = Counter(v.__code__.co_filename for v in vars(cls).values() if inspect.isfunction(v))
    if not files:
        # No method of its own: the module it was found in defines it if its source says so.
        try:
            source = inspect.getsource(found_in)
        except (OSError, TypeError):
            return None
        defines = re.search(rf"^class {re.escape(cls.__name__)}\b", source, re.MULTILINE)
        return found_in.__name__ if defines else None
    path = Path(files.most_common(1)[0][0]).resolve()
    for entry in sorted((Path(p).resolve() for p in sys.path if p), key=lambda p: -len(str(p))):
        if path.is_relative_to(entry):
            parts = path.relative_to(entry).with_suffix("").parts
            return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
    return None


def _is_trusted_or_dangerous(key: str) -> bool:
    module, _, qualname = key.partition(":")
    full = f"{module}.{qualname}"
    return full.startswith(TRUSTED_CLASS_PREFIXES) or is_dangerous(module, qualname)


def _source_digest(func: object) -> str:
    try:
        source = inspect.getsource(func)
    except (OSError, TypeError):
        return "sha256:?"
    return "sha256:" + hashlib.sha256(source.encode()).hexdigest()[:16]


def _enum_values(cls: type[enum.Enum]) -> tuple[object, ...] | None:
    if type(cls).__call__ is not enum.EnumType.__call__ or cls.__new__ is not enum.Enum.__new__:
        return None
    values = []
    for member in cls.__members__.values():
        value = member._value_
        if type(value) not in _SCALARS:
            return None
        values.append(value)
    if any(v not in cls._value2member_map_ for v in values):
        return None
    return tuple(sorted(set(values), key=lambda v: (type(v).__name__, repr(v))))


def _is_stdlib_flag(cls: type[enum.Enum]) -> bool:
    """A Flag whose lookup miss runs only the standard library's Flag._missing_.

    For an int that is no member's value, Flag._missing_ builds a composite pseudo-member with
    `object.__new__` or `int.__new__`, iterating the members and naming unknown bits with the
    class's `_numeric_repr_`: inert when every one of those is the standard library's own.
    """
    if not issubclass(cls, enum.Flag):
        return False
    iterators = (enum.Flag._iter_member_by_value_, enum.Flag._iter_member_by_def_)
    return (
        getattr(cls._missing_, "__func__", None) is enum.Flag._missing_.__func__
        and getattr(cls._iter_member_, "__func__", None) in [getattr(i, "__func__", i) for i in iterators]
        and cls._numeric_repr_ in (repr, hex, bin, oct, int.__repr__)
        and cls._member_type_ in (object, int)
    )


def _is_structseq(cls: type) -> bool:
    return (
        issubclass(cls, tuple)
        and hasattr(cls, "n_sequence_fields")
        and isinstance(vars(cls).get("__new__"), types.BuiltinFunctionType)
    )


def _own_hook(cls: type, hook: str) -> object | None:
    """The hook `cls` gets from a class of its own (not object, not a built-in container)."""
    for base in cls.__mro__:
        if base is object or base in _CONTAINER_HOOKS or base in (tuple, int, float, str, bytes, frozenset):
            return None
        if hook in vars(base):
            return vars(base)[hook]
    return None


def code_setters(cls: type) -> tuple[str, ...]:
    """Names whose `setattr` on an instance runs Python code: properties with a setter and
    descriptors whose type defines `__set__` in Python (slots' member descriptors do not)."""
    names: set[str] = set()
    for base in cls.__mro__:
        if base is object:
            break
        for name, value in vars(base).items():
            if name in names or name.startswith("__"):
                continue
            if isinstance(value, property):
                if value.fset is not None:
                    names.add(name)
                continue
            setter = getattr(type(value), "__set__", None)
            if setter is not None and (inspect.isfunction(setter) or inspect.ismethod(setter)):
                names.add(name)
    return tuple(sorted(names))


def _plain_hooks_ok(cls: type, key: str) -> bool:
    if type(cls) not in (type, __import__("abc").ABCMeta):
        return False
    hooks = list(_HOOKS)
    for container, names in _CONTAINER_HOOKS.items():
        if issubclass(cls, container):
            hooks.extend(names)
    for hook in hooks:
        found = _own_hook(cls, hook)
        if found is None:
            continue
        func = getattr(found, "__func__", found)
        qualname = getattr(func, "__qualname__", "")
        if func is None or (getattr(func, "__module__", "") == "dataclasses" and qualname in _DATACLASS_HOOKS):
            continue
        code = getattr(func, "__code__", None)
        if dataclasses.is_dataclass(cls) and hook in _DATACLASS_WRITTEN and getattr(code, "co_filename", "") == "<string>":
            continue  # written by @dataclass from the field list: compares, hashes or refuses to set fields
        owner = next(b for b in cls.__mro__ if hook in vars(b))
        owner_key = f"{owner.__module__}:{owner.__qualname__}.{hook}"
        if REVIEWED_HOOKS.get(owner_key) == _source_digest(func):
            continue
        _log.debug("%s: not plain, %s has its own %s", key, owner_key, hook)
        return False
    return True


def _scalar_arity(cls: type) -> int | None:
    if any(inspect.isfunction(v) for v in vars(cls).values()):
        return None  # a Python class: its construction runs Python code
    for args in ((), (1.0,), (1.0, 1.0)):
        try:
            instance = cls(*args)
            reduced = instance.__reduce__()
        except Exception:  # noqa: S112  # probing arities; the wrong ones raise
            continue
        if (
            isinstance(reduced, tuple)
            and len(reduced) == 2
            and reduced[0] is cls
            and isinstance(reduced[1], tuple)
            and all(type(a) in (int, float) for a in reduced[1])
        ):
            return len(reduced[1])
    return None


@dataclasses.dataclass
class Knowledge:
    enums: dict[str, tuple[object, ...]] = dataclasses.field(default_factory=dict)
    structseqs: set[str] = dataclasses.field(default_factory=set)
    plain: set[str] = dataclasses.field(default_factory=set)
    setters: dict[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)
    aliases: set[str] = dataclasses.field(default_factory=set)
    scalar: dict[str, int] = dataclasses.field(default_factory=dict)
    singletons: set[str] = dataclasses.field(default_factory=set)
    flags: set[str] = dataclasses.field(default_factory=set)
    roots: frozenset[str] = frozenset(name for _dist, name in LIBRARIES) | frozenset(STDLIB_MODULES)

    def note_singleton(self, value: object) -> None:
        """Objects pickled by name (`__reduce__` returns a string): pandas.NA, pandas.NaT."""
        kind = type(value)
        # Only objects of the libraries' own plain types are asked; bound C++ types (pybind11
        # metaclasses) can abort the process when probed.
        if type(kind) is not type or kind.__module__.split(".")[0] not in self.roots:
            return
        if kind.__reduce__ is object.__reduce__:
            return
        try:
            reduced = value.__reduce__()
        except Exception:  # many objects refuse; only those pickled by name matter
            return
        if not isinstance(reduced, str) or isinstance(value, (type, types.ModuleType, types.FunctionType)):
            return
        where = getattr(value, "__module__", None) or pickle.whichmodule(value, reduced)
        if not isinstance(where, str) or where.split(".")[0] not in self.roots:
            return
        if getattr(sys.modules.get(where), reduced, None) is value and not is_dangerous(where, reduced):
            self.singletons.add(f"{where}:{reduced}")

    def classify(self, cls: type, found_in: types.ModuleType) -> None:
        key = _pickled_name(cls)
        if key is None:
            return
        module = key.partition(":")[0]
        if module.split(".")[0] not in self.roots:
            return  # a dependency's class seen through an import; its own library is not walked
        home = _defining_module(cls, found_in)
        if (
            home is not None
            and f"{home}.".startswith(TRUSTED_CLASS_PREFIXES)
            and module.split(".")[0] == home.split(".")[0]
            and not f"{module}.".startswith(TRUSTED_CLASS_PREFIXES)
            and not is_dangerous(module, key.partition(":")[2])
        ):
            self.aliases.add(key)
        if is_dangerous(module, key.partition(":")[2]):
            return
        if module in SCALAR_CLASS_MODULES:
            arity = _scalar_arity(cls)
            if arity is not None:
                self.scalar[key] = arity
            return
        if _is_trusted_or_dangerous(key) and not (isinstance(cls, enum.EnumType) or _is_structseq(cls)):
            return
        if isinstance(cls, enum.EnumType):
            values = _enum_values(cls)
            if values is not None:
                self.enums[key] = values
                if _is_stdlib_flag(cls):
                    self.flags.add(key)
        elif _is_structseq(cls):
            self.structseqs.add(key)
        elif cls.__new__ is object.__new__ and _plain_hooks_ok(cls, key):
            self.note_plain(key, cls)

    def note_plain(self, key: str, cls: type) -> None:
        self.plain.add(key)
        setters = code_setters(cls)
        if setters:
            self.setters[key] = setters


def gather() -> tuple[Knowledge, dict[str, str]]:
    from importlib.metadata import PackageNotFoundError, version  # noqa: PLC0415

    versions = {"python": platform.python_version()}
    known = Knowledge()
    seen: set[tuple[int, str]] = set()
    seen_objects: set[int] = set()
    packages = [(dist, name) for dist, name in LIBRARIES] + [("python", m) for m in STDLIB_MODULES]
    for dist, package in packages:
        if dist != "python":
            try:
                versions[dist] = version(dist)
            except PackageNotFoundError:
                continue
        walker = _walk(package) if dist != "python" else iter([importlib.import_module(package)])
        for module in walker:
            for value in list(vars(module).values()):
                if isinstance(value, type) and (id(value), module.__name__) not in seen:
                    seen.add((id(value), module.__name__))
                    known.classify(value, module)
                elif not callable(value) and id(value) not in seen_objects:
                    seen_objects.add(id(value))
                    known.note_singleton(value)
    return known, versions


def render(known: Knowledge, versions: dict[str, str]) -> str:
    out = io.StringIO()
    w = out.write
    w('"""What classes that checkpoints name ARE, recorded from the real libraries.\n\n')
    w("GENERATED by scripts/gen_known_classes.py; do not edit. The scanner reads this data and never\n")
    w("imports the libraries. Keys are the names pickle writes, as `module:qualname`.\n")
    w('"""\n\n# fmt: off\n')
    w("GENERATED_FROM: dict[str, str] = {\n")
    for dist, ver in sorted(versions.items()):
        w(f"    {dist!r}: {ver!r},\n")
    w("}\n\n")
    w("# Enum classes and their members' values: a call with one of these values is a member lookup.\n")
    w("ENUMS: dict[str, tuple[object, ...]] = {\n")
    for key in sorted(known.enums):
        w(f"    {key!r}: {known.enums[key]!r},\n")
    w("}\n\n")
    # The largest table is written per module, to keep the file small.
    by_module: dict[str, list[str]] = {}
    for key in sorted(known.plain):
        module, _, qualname = key.partition(":")
        by_module.setdefault(module, []).append(qualname)
    w("# Classes whose rebuilding (NEWOBJ, BUILD) runs no code of their own, by module.\n")
    w("_PLAIN_BY_MODULE: dict[str, tuple[str, ...]] = {\n")
    for module, names in by_module.items():
        w(f"    {module!r}: {tuple(names)!r},\n")
    w("}\n")
    w("PLAIN_CLASSES: frozenset[str] = frozenset(\n")
    w('    f"{module}:{name}" for module, names in _PLAIN_BY_MODULE.items() for name in names\n')
    w(")\n\n")
    w("# Attributes of plain classes whose assignment runs the class's code (property setters).\n")
    w("SETTERS: dict[str, tuple[str, ...]] = {\n")
    for key in sorted(known.setters):
        w(f"    {key!r}: {known.setters[key]!r},\n")
    w("}\n\n")
    for title, name, items in (
        ("C struct-sequence types: a call with a literal sequence (and dict) only builds the tuple.",
         "STRUCTSEQS", known.structseqs),
        ("Public names of classes their library defines under a prefix trusted for rebuilding.",
         "ALIASES", known.aliases),
        ("Objects pickled by name (a mention only imports the library and fetches them).",
         "SINGLETONS", known.singletons),
        ("Flag classes (in ENUMS) whose call with any int runs only the standard library's Flag code.",
         "FLAGS", known.flags),
    ):
        w(f"# {title}\n{name}: frozenset[str] = frozenset({{\n")
        for key in sorted(items):
            w(f"    {key!r},\n")
        w("})\n\n")
    w("# Compiled classes whose call with this many literal numbers only stores them.\n")
    w("SCALAR_CLASSES: dict[str, int] = {\n")
    for key in sorted(known.scalar):
        w(f"    {key!r}: {known.scalar[key]},\n")
    w("}\n\n")
    w("# Reviewed classes whose call with any arguments only stores them.\n")
    w("INERT_CALL_CLASSES: frozenset[str] = frozenset({\n")
    for key in sorted(INERT_CALL_CLASSES):
        w(f"    {key!r},\n")
    w("})\n")
    return out.getvalue()


def _resolve(key: str) -> object:
    module, _, qualname = key.partition(":")
    obj: object = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


def verify() -> list[str]:
    """Names in known_classes.py that no longer have their kind in the installed libraries.

    Quicker than regenerating: it imports only the recorded modules. Run it in a fresh process:
    some libraries patch classes while they train (Lightning wraps samplers' `__setattr__`).
    """
    from bastion.scan.pickle import known_classes as data  # noqa: PLC0415

    wrong: list[str] = []
    for key, values in data.ENUMS.items():
        cls = _resolve(key)
        if not isinstance(cls, enum.EnumType) or _enum_values(cls) != values:
            wrong.append(f"{key}: not an Enum with those members")
    wrong += [f"{key}: not a standard Flag" for key in data.FLAGS if not _is_stdlib_flag(_resolve(key))]
    wrong += [f"{key}: not a struct sequence" for key in data.STRUCTSEQS if not _is_structseq(_resolve(key))]
    for key, arity in data.SCALAR_CLASSES.items():
        if _scalar_arity(_resolve(key)) != arity:
            wrong.append(f"{key}: not reduced to {arity} numbers")
    for key in data.PLAIN_CLASSES:
        cls = _resolve(key)
        if not (isinstance(cls, type) and cls.__new__ is object.__new__ and _plain_hooks_ok(cls, key)):
            wrong.append(f"{key}: has a rebuild hook of its own")
        elif code_setters(cls) != data.SETTERS.get(key, ()):
            wrong.append(f"{key}: its property setters changed")
    wrong += [f"{key}: not a class" for key in data.ALIASES if not isinstance(_resolve(key), type)]
    wrong += [f"{key}: a class" for key in data.SINGLETONS if isinstance(_resolve(key), type)]
    return wrong


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="compare with the file instead of writing it")
    parser.add_argument("--digests", action="store_true", help="print the digests of the reviewed hooks")
    parser.add_argument("--verify", action="store_true", help="check each recorded name still has its kind")
    parser.add_argument("-v", "--verbose", action="store_true")
    opts = parser.parse_args()
    logging.basicConfig(level=logging.DEBUG if opts.verbose else logging.WARNING, stream=sys.stderr)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    if opts.verify:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            wrong = verify()
        for line in wrong:
            print(line, file=sys.stderr)
        return 1 if wrong else 0
    if opts.digests:
        for key in REVIEWED_HOOKS:
            module, _, rest = key.partition(":")
            obj: object = importlib.import_module(module)
            for part in rest.split("."):
                obj = getattr(obj, part)
            print(key, _source_digest(obj))
        return 0
    known, versions = gather()
    text = render(known, versions)
    if opts.check:
        current = OUT.read_text(encoding="utf-8") if OUT.is_file() else ""
        if current != text:
            print(f"{OUT} differs from what the installed libraries say; re-run without --check", file=sys.stderr)
            return 1
        return 0
    OUT.write_text(text, encoding="utf-8")
    print(
        f"wrote {OUT}: {len(known.enums)} enums, {len(known.structseqs)} struct sequences, "
        f"{len(known.plain)} plain classes, {len(known.aliases)} aliases, {len(known.scalar)} scalar classes, "
        f"{len(known.singletons)} singletons",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
