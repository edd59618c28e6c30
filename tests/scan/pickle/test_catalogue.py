"""The specification catalogue is the allow-list: exact, real names, each read from its code."""

from __future__ import annotations

import enum
import importlib
import inspect
import types
import warnings

import pytest

from bastion.scan.pickle.callables import (
    CATALOGUE,
    DENIED_MODULE_EXCEPTIONS,
    CallArgs,
    Effect,
    spec_for,
)
from bastion.scan.pickle.rules import DANGEROUS_NAMES, is_dangerous, is_safe_callable

# Spellings older releases wrote and that today's wheels no longer define: kept so that old
# checkpoints load, but no installed object can be compared with them.
LEGACY = frozenset(
    {
        "torch._utils._rebuild_sparse_csr_tensor",
        "torch._utils._rebuild_mps_tensor",
        "joblib.numpy_pickle_utils.NDArrayWrapper",
        "sklearn.neighbors._binary_tree.newObj",
    }
)


def _resolve(dotted: str) -> object:
    """Import the longest importable module prefix, then walk attributes (test-only import)."""
    parts = dotted.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                obj: object = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # numpy.core.* still resolves, with a DeprecationWarning
            for attr in parts[cut:]:
                obj = getattr(obj, attr)
        return obj
    raise ImportError(dotted)


@pytest.mark.parametrize("name", sorted(set(CATALOGUE) - LEGACY))
def test_every_catalogue_name_exists_in_the_installed_libraries(name: str) -> None:
    obj = _resolve(name)
    assert not isinstance(obj, types.ModuleType), f"{name} is a module: allow exact callables only"


@pytest.mark.parametrize("name", sorted(LEGACY))
def test_legacy_names_are_really_gone_from_the_installed_libraries(name: str) -> None:
    with pytest.raises((ImportError, AttributeError), match=r"."):
        _resolve(name)


def test_the_allow_list_has_no_prefixes() -> None:
    # The red team's `torch.ao.quantization.` prefix re-exported functools.partial.
    assert not is_safe_callable("torch.ao.quantization.observer", "partial")
    assert not is_safe_callable("torch.ao.quantization", "anything")
    assert not is_safe_callable("numpy.dtypes", "NotADType")
    assert not is_safe_callable("sklearn._loss._loss", "CyEvil")
    assert not is_safe_callable("sklearn._loss", "__pyx_unpickle_Anything")
    assert all(not name.endswith(".") and "*" not in name for name in CATALOGUE)


def test_python_two_spellings_reach_the_same_spec() -> None:
    assert spec_for("copy_reg", "_reconstructor") is CATALOGUE["copyreg._reconstructor"]
    assert spec_for("__builtin__", "set") is CATALOGUE["builtins.set"]
    assert spec_for("_codecs", "encode") is CATALOGUE["codecs.encode"]


def test_no_catalogue_entry_is_on_the_deny_list_unless_listed_as_an_exception() -> None:
    assert not set(CATALOGUE) & DANGEROUS_NAMES
    denied = {n for n in CATALOGUE if is_dangerous(*n.rsplit(".", 1))}
    assert denied <= DENIED_MODULE_EXCEPTIONS, sorted(denied - DENIED_MODULE_EXCEPTIONS)


@pytest.mark.parametrize("name", sorted(CATALOGUE))
def test_every_spec_cites_its_source_and_names_real_parameters(name: str) -> None:
    spec = CATALOGUE[name]
    assert spec.source
    names = {p.name for p in spec.all_params()}
    for param in spec.all_params():
        if param.effect is Effect.CALLED and param.calls_with in (CallArgs.PARAMS, CallArgs.SPREAD):
            assert set(param.from_params) <= names, f"{name}: {param.name} is called with unknown parameters"


# Callables whose behaviour on a call lives in another function than the class's __init__.
CALL_IMPLEMENTATION = {"enum.Enum": enum.EnumType.__call__}


def _python_signature(name: str) -> list[str] | None:
    if name in CALL_IMPLEMENTATION:
        return [p.name for p in inspect.signature(CALL_IMPLEMENTATION[name]).parameters.values()][1:]
    obj = _resolve(name)
    target = obj.__init__ if inspect.isclass(obj) and "__init__" in vars(obj) else obj  # type: ignore[misc]
    if not inspect.isfunction(target):
        return None
    names = [p.name for p in inspect.signature(target).parameters.values()]
    return names[1:] if target is not obj else names


SIGNATURE_CHECKED = sorted(
    n
    for n, spec in CATALOGUE.items()
    if n not in LEGACY and not spec.inert and not n.rsplit(".", 1)[1].startswith("__pyx_unpickle_")
)


@pytest.mark.parametrize("name", SIGNATURE_CHECKED)
def test_specs_that_reach_code_match_the_real_python_signature(name: str) -> None:
    real = _python_signature(name)
    if real is None:
        pytest.skip(f"{name} is implemented in C; its spec cites the C function")
    spec = CATALOGUE[name]
    written = [p.name for p in spec.params]
    assert written == real[: len(written)], f"{name}: spec {written} but the code says {real}"
