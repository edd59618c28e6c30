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
    """A key's query stream crossed a detector's threshold.

    Attributes:
        kind: an `AlarmKind` value, e.g. "extraction.prada".
        key_id: the API key's id (never its secret).
        queries: how many queries the key had sent when the alarm fired (1-based).
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
