"""SERVE: what the detectors report: an alarm's kind and the stream that raised it."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class AlarmKind(enum.StrEnum):
    """What a key's queries look like; the values are stable ids (logs, audit, JSON)."""

    PRADA = "extraction.prada"
    OUT_OF_DISTRIBUTION = "extraction.out-of-distribution"
    NEAR_DUPLICATE = "membership.near-duplicate"


@dataclass(frozen=True, slots=True)
class Alarm:
    """A stream of queries crossed a detector's threshold.

    From `QueryMonitor` the stream is one API key's queries; from `StreamWatch`, any stream the
    gateway names ("key:K41", "account:acme", "net:203.0.113.0/24", "model:fraud@7"). The field
    keeps its name, `key_id`, so that audit records and handlers written for keys read both;
    `stream` is the same value under the general name.

    Attributes:
        kind: an `AlarmKind` value, e.g. "extraction.prada".
        key_id: the API key's id (never its secret), or the stream's id.
        queries: from `QueryMonitor`, how many queries the key had sent when the alarm fired,
            repeats included (1-based: the index of the query that raised it); from
            `StreamWatch`, how many rows had been added to the stream (those it was given:
            fresh ones, when a `RepeatFilter` comes first).
        score: the detector's statistic at that moment.
        threshold: the value it crossed.
        message: one sentence for a person: what was seen, and why it matters.
    """

    kind: str
    key_id: str
    queries: int
    score: float
    threshold: float
    message: str

    @property
    def stream(self) -> str:
        """The stream that alarmed: a key id from `QueryMonitor`, a stream id from `StreamWatch`."""
        return self.key_id
