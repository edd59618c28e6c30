"""IMPORTED arguments: a dotted name an allowed callable resolves at load time.

No callable in today's catalogue imports a name it is handed (torch's `_get_layout` looks its
argument up in a table, NumPy's bit-generator helper in a dict), so these tests add one for
the duration of the test, as a future entry would be written.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from bastion.findings import Severity
from bastion.scan.api import scan_bytes
from bastion.scan.pickle import callables, rules
from corpus.expect import assert_fails_with, assert_passes
from corpus.spec_streams import call, g, s, stream

IMPORTER = "mylib.registry.resolve"


@pytest.fixture
def importer() -> Iterator[None]:
    spec = callables._spec(IMPORTER, "path:imported", "mylib/registry.py::resolve (test entry)")
    callables.CATALOGUE[IMPORTER] = spec
    callables.spec_for.cache_clear()
    rules.is_safe_callable.cache_clear()
    yield
    del callables.CATALOGUE[IMPORTER]
    callables.spec_for.cache_clear()
    rules.is_safe_callable.cache_clear()


@pytest.mark.usefixtures("importer")
def test_an_imported_name_is_judged_as_the_global_it_names() -> None:
    report = scan_bytes(stream(call(g("mylib.registry", "resolve"), s("os.system"))), "imp.pkl")
    assert_fails_with(report, "pickle.dangerous-global")
    assert any(f.severity is Severity.CRITICAL and f.evidence == "os.system" for f in report.findings)


@pytest.mark.usefixtures("importer")
def test_an_imported_allowed_name_passes() -> None:
    assert_passes(scan_bytes(stream(call(g("mylib.registry", "resolve"), s("collections.OrderedDict"))), "ok.pkl"))


@pytest.mark.usefixtures("importer")
def test_an_imported_name_made_while_loading_is_a_computed_global() -> None:
    name = call(g("builtins", "str"), s("os.system"))
    assert_fails_with(
        scan_bytes(stream(call(g("mylib.registry", "resolve"), name)), "imp.pkl"), "pickle.computed-global"
    )


@pytest.mark.usefixtures("importer")
def test_an_imported_bare_module_is_judged_as_importing_it() -> None:
    assert_fails_with(
        scan_bytes(stream(call(g("mylib.registry", "resolve"), s("subprocess"))), "m.pkl"), "pickle.dangerous-global"
    )
    assert_fails_with(
        scan_bytes(stream(call(g("mylib.registry", "resolve"), s("evilpkg"))), "m.pkl"), "pickle.unknown-callable"
    )
