"""Arguments of any shape reach the spec checks without breaking the emulator.

Hypothesis builds streams that call catalogue callables (and a few unknown and dangerous ones)
with nested literals, containers, calls, NEWOBJ_EX keywords and BUILD states; the scan must
give findings, never an internal error. The operator and functools carriers that are not in
the catalogue stay on the deny-list.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bastion.findings import Severity
from bastion.scan.api import scan_bytes
from bastion.scan.pickle.callables import CATALOGUE
from corpus.expect import assert_fails_with, describe
from corpus.spec_streams import build, call, dct, g, i, lst, newobj, newobj_ex, raw_bytes, s, stream, tup

_NAMES = [
    *sorted(n for n, spec in CATALOGUE.items() if not spec.inert and "__pyx_unpickle_" not in n),
    "sklearn.tree._tree.__pyx_unpickle_TreeBuilder",
    "builtins.getattr",
    "_codecs.encode",
    "mymod.helper",
    "os.system",
]


def _global(dotted: str) -> bytes:
    module, _, name = dotted.rpartition(".")
    return g(module, name)


_leaves = st.one_of(
    st.integers(-5, 300).map(i),
    st.text(max_size=8).map(s),
    st.binary(max_size=16).map(raw_bytes),
    st.sampled_from(_NAMES).map(_global),
    st.just(b"N"),
)


def _extend(children: st.SearchStrategy[bytes]) -> st.SearchStrategy[bytes]:
    args = st.lists(children, max_size=4)
    return st.one_of(
        args.map(lambda a: tup(*a)),
        args.map(lambda a: lst(*a)),
        st.dictionaries(st.sampled_from(["key", "func", "state", "__class__", "b"]), children, max_size=3).map(dct),
        st.tuples(st.sampled_from(_NAMES).map(_global), args).map(lambda p: call(p[0], *p[1])),
        st.tuples(st.sampled_from(_NAMES).map(_global), args).map(lambda p: newobj(p[0], *p[1])),
        st.tuples(
            st.sampled_from(_NAMES).map(_global),
            args,
            st.dictionaries(st.sampled_from(["key", "func"]), children, max_size=2),
        ).map(lambda p: newobj_ex(p[0], tuple(p[1]), p[2])),
        st.tuples(st.sampled_from(_NAMES).map(_global), args, children).map(lambda p: build(call(p[0], *p[1]), p[2])),
    )


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=st.recursive(_leaves, _extend, max_leaves=12))
def test_any_arguments_to_allowed_callables_give_findings_not_errors(body: bytes) -> None:
    report = scan_bytes(stream(body), "fuzz.pkl")
    internal = [f for f in report.findings if "internal error" in f.message]
    assert not internal, describe(report.findings)


@pytest.mark.parametrize(
    "carrier",
    [
        call(g("operator", "methodcaller"), s("system"), s("true")),
        call(g("_operator", "attrgetter"), s("__globals__")),
        call(g("operator", "itemgetter"), i(0)),
        call(g("functools", "cmp_to_key"), g("mymod", "helper")),
        call(g("functools", "lru_cache"), g("mymod", "helper")),
        call(g("functools", "partialmethod"), g("mymod", "helper")),
    ],
    ids=["methodcaller", "attrgetter", "itemgetter", "cmp_to_key", "lru_cache", "partialmethod"],
)
def test_carriers_outside_the_catalogue_stay_denied(carrier: bytes) -> None:
    report = scan_bytes(stream(call(g("builtins", "list"), call(g("builtins", "map"), carrier, lst(i(1))))), "c.pkl")
    assert_fails_with(report, "pickle.dangerous-global")
    assert max(f.severity for f in report.findings) is Severity.CRITICAL
