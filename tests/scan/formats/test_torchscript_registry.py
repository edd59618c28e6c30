"""The TorchScript op lists against PyTorch's own operator registry (issue 11).

`formats/torchscript.py` names, by hand, the ops that reach files, processes and the network
(`_REACHING_OPS`, CRITICAL wherever they appear) and the few `prim` ops that are inert. These
tests read the registry of the installed torch, so an op added by a new release that fits those
words, or an inert name that no longer exists, fails here rather than in a red team's file.
"""

from __future__ import annotations

import re

import pytest

from bastion.scan.formats import torchscript

torch = pytest.importorskip("torch")

# Words of an op name that reach outside the process; "open" only as a whole word part
# (miopen_* are AMD's convolution kernels).
_REACHING_WORDS = re.compile(r"(^|_)(file|save|load|open|exec|eval|system|import|library|rpc|remote|socket|url)($|_)")


def _registry() -> dict[str, set[str]]:
    ops: dict[str, set[str]] = {}
    for schema in torch._C._jit_get_all_schemas():
        namespace, _, name = schema.name.partition("::")
        ops.setdefault(namespace, set()).add(name)
    return ops


def test_every_registered_op_of_an_inert_namespace_or_prim_that_reaches_outside_is_listed() -> None:
    ops = _registry()
    namespaces = {"prim", *torchscript._INERT_NAMESPACES}
    reaching = {f"{ns}::{name}" for ns in namespaces for name in ops.get(ns, ()) if _REACHING_WORDS.search(name)}
    assert reaching, "the pattern finds nothing: the registry was not read"
    missing = sorted(op for op in reaching if op.partition("::")[2] not in torchscript._REACHING_OPS)
    assert missing == [], f"ops that reach files, processes or the network but are not in _REACHING_OPS: {missing}"


def test_every_inert_prim_name_is_an_op_or_an_attribute_the_printer_emits() -> None:
    prim = _registry()["prim"]
    # `x.shape` is printed as an attribute, not a prim op; every other name must be registered.
    unknown = sorted(name for name in torchscript._INERT_PRIM - {"shape"} if name not in prim)
    assert unknown == [], f"_INERT_PRIM names no prim op of this torch: {unknown}"


def test_no_inert_prim_name_reaches_outside() -> None:
    assert not {n for n in torchscript._INERT_PRIM if _REACHING_WORDS.search(n)}


def test_every_inert_namespace_is_one_of_pytorchs_own() -> None:
    assert set(_registry()) >= torchscript._INERT_NAMESPACES, "an inert namespace this torch does not register"
