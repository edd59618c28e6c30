"""Entry bodies written by someone with database access to crash the checker rather than fool it.

A body is text the database returns; whoever can write the database can put anything there. A
JSON array nested thousands deep made `verify` and `export` die with RecursionError instead of
naming the edited entry (a 500 over HTTP, a traceback on the command line).
"""

from __future__ import annotations

import io
import json

from sqlalchemy import Engine, text

from bastion.audit import AuditEvent, AuditLog, ProblemKind

CHAIN = "registry"
DEEP = "[" * 100_000


def test_a_body_nested_to_crash_the_parser_is_an_edited_entry(engine: Engine) -> None:
    log = AuditLog(engine, CHAIN)
    for n in range(1, 6):
        log.append(AuditEvent(f"user-{n}", "PROMOTE", f"m@{n}"))
    with engine.begin() as connection:
        connection.execute(text("UPDATE audit_entries SET body = :b WHERE chain = :c AND seq = 3"), {"b": DEEP, "c": CHAIN})

    report = log.verify([])
    exported = io.StringIO()
    count = log.export_jsonl(exported)

    assert (ProblemKind.EDITED, 3) in {(p.kind, p.seq) for p in report.problems}
    assert "entry 3 was edited: its body is not an audit entry" in [p.message for p in report.problems]
    assert count == 5
    assert json.loads(exported.getvalue().splitlines()[2])["body"] == DEEP
