"""SERVE: the checks a request's rows pass before the model answers them.

Detectors that run after the answer (`QueryMonitor` in the observer) can only act on the next
request: the one that raised the alarm has already been answered, and one 64-row answer can be
most of a copy. The checks here need nothing but the rows and a few counters, so they run first:

- each row is judged against the model's training profile (`RowJudge`): outside the training
  ranges, or where the training data's joint distribution does not go (independent sampling of
  correlated features stands out), with mean-imputed features left out;
- the atypical rows are counted for four streams at once (`StreamWatch`): the key, its account,
  the source network (an IPv4 /24, an IPv6 /48) and the whole model, so ten keys of one account,
  or of one network, add up to one caller;
- an alarm on the key's, the account's or the network's stream refuses the request that raised it
  (under `suspend` and `throttle`), and from then on every request of an alarmed stream that
  carries an atypical row is refused as well, whichever key sends it. The model's stream is too
  broad to refuse the request that raised it: its alarm is an alert. A network is shared by
  benign callers too. So an alarmed network, or an alarmed model (ten accounts on ten networks
  add up there), refuses only the atypical rows of keys whose own rows are already suspect.

Each model has its own counters, since its profile is what "atypical" means.
"""

from __future__ import annotations

import enum
import functools
import ipaddress
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from bastion.serve.detect import (
    DEFAULT_FALSE_ALARM_RATE,
    Alarm,
    RepeatFilter,
    RowFlags,
    RowJudge,
    StreamConfig,
    StreamWatch,
    TrainingProfile,
)
from bastion.serve.spec import ServingSpec

# Streams remembered as alarmed, at most (least recently alarmed forgotten first).
MAX_ALARMED_STREAMS = 100_000
# Client addresses whose network is remembered (each entry well under 200 bytes).
NETWORKS_CACHED = 65_536
# Atypical rows a key must have sent itself before its network's alarm refuses its atypical rows.
MIN_OWN_ATYPICAL = 2


class StreamKind(enum.StrEnum):
    """Whose traffic a stream adds up; the value is the stream id's prefix."""

    KEY = "key"
    ACCOUNT = "account"
    NETWORK = "net"
    MODEL = "model"


# Streams whose alarm refuses the request that raised it.
REFUSING = (StreamKind.KEY, StreamKind.ACCOUNT, StreamKind.NETWORK)
# Streams a caller is held to: once alarmed, every atypical row of theirs is refused. An alarmed
# network or model refuses only the atypical rows of keys whose own rows are suspect.
HELD = (StreamKind.KEY, StreamKind.ACCOUNT)


@dataclass(frozen=True, slots=True)
class StreamAlarm:
    """A stream's alarm: which stream, of what kind, and the detector's alarm."""

    kind: StreamKind
    stream: str  # e.g. "account:acme"
    alarm: Alarm


@dataclass(frozen=True, slots=True)
class RowsVerdict:
    """What the checks made of one request's rows.

    Attributes:
        atypical: how many of its rows lie where training records do not.
        alarms: alarms this request raised.
        refuse: whether the request must not be answered: it raised an alarm on a stream a
            caller is held to, or it carries an atypical row and such a stream is alarmed.
        rows: each row's verdicts, for the detectors after the answer (None for a model
            without a profile).
    """

    atypical: int
    alarms: tuple[StreamAlarm, ...]
    refuse: bool
    rows: RowFlags | None = None


ANSWER = RowsVerdict(0, (), False)


def _constant(value: bool) -> NDArray[np.bool_]:
    array = np.array([value])
    array.flags.writeable = False  # shared by every one-row request: nobody may change it
    return array


_FRESH_ROW = _constant(True)
# A one-row request whose row the key sent before: nothing to judge or count.
_REPEATED_ROW = RowsVerdict(0, (), False, RowFlags(_constant(False), _constant(False)))


def _row_bytes(rows: NDArray[np.float32]) -> bytes:
    """A (1, d) request's row as float32 bytes (what the repeat filter digests)."""
    if rows.dtype != np.float32 or not rows.flags.c_contiguous:
        rows = np.ascontiguousarray(rows, dtype=np.float32)
    return rows.tobytes()


@functools.lru_cache(maxsize=NETWORKS_CACHED)
def source_network(address: str) -> str:
    """The network a client address belongs to: its IPv4 /24 or IPv6 /48 ("unknown" as is).

    Cached: parsing an address costs more than every other check of a one-row request.
    """
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    prefix = 24 if ip.version == 4 else 48
    return str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False))


@dataclass(frozen=True)
class _ModelGuard:
    judge: RowJudge
    watch: StreamWatch
    repeats: RepeatFilter


_Judgement = tuple[list[bool] | NDArray[np.bool_], RowFlags] | RowsVerdict


def _judge_one(guard: _ModelGuard, key_stream: str, rows: NDArray[np.float32], judged: NDArray[np.bool_] | None) -> _Judgement:
    """A one-row request's verdicts to count (as a list), or its verdict when its row is a repeat."""
    if not guard.repeats.fresh_row(key_stream, _row_bytes(rows)):
        return _REPEATED_ROW
    every = guard.judge.judge(rows) if judged is None else judged
    return every.tolist(), RowFlags(_FRESH_ROW, every)


def _judge_many(guard: _ModelGuard, key_stream: str, rows: NDArray[np.float32], judged: NDArray[np.bool_] | None) -> _Judgement:
    """The verdicts of a request's fresh rows, to count, or its verdict when none is fresh."""
    fresh = guard.repeats.fresh(key_stream, rows)
    if fresh.all():
        every = guard.judge.judge(rows) if judged is None else judged
        return every, RowFlags(fresh, every)
    every = np.zeros(rows.shape[0], dtype=np.bool_)
    if not fresh.any():
        return RowsVerdict(0, (), False, RowFlags(fresh, every))
    flags = guard.judge.judge(rows[fresh]) if judged is None else judged[fresh]
    every[fresh] = flags
    return flags, RowFlags(fresh, every)


class RequestGuard:
    """The before-answer checks of every served model that ships a training profile.

    Args:
        specs: the served models' declarations, by name; a model without a profile is not judged.
        config: the stream tests' thresholds; default `StreamConfig.for_rate` of each profile's
            per-row false-alarm rate.
    """

    def __init__(self, specs: Mapping[str, ServingSpec], config: StreamConfig | None = None) -> None:
        self._models: dict[str, _ModelGuard] = {}
        for name, spec in specs.items():
            if spec.profile:
                profile = TrainingProfile.from_dict(spec.profile)
                self._models[name] = _ModelGuard(
                    RowJudge(profile, spec.input.minimum, spec.input.maximum),
                    StreamWatch(config or StreamConfig.for_rate(profile.false_alarm_rate or DEFAULT_FALSE_ALARM_RATE)),
                    RepeatFilter(profile.n_features),
                )
        self._alarmed: OrderedDict[str, None] = OrderedDict()

    def guards(self, model: str) -> bool:
        """Whether `model` has a profile to judge rows against."""
        return model in self._models

    def judge(self, model: str, rows: NDArray[np.float32]) -> NDArray[np.bool_]:
        """Which of `rows` lie where `model`'s training records do not (a model it guards).

        A pure function of each row: the gateway judges the rows of every request of an
        event-loop turn in one call and hands each request's part to `check`.
        """
        return self._models[model].judge.judge(rows)

    def check(
        self,
        model: str,
        key_id: str,
        account: str,
        network: str,
        rows: NDArray[np.float32],
        judged: NDArray[np.bool_] | None = None,
    ) -> RowsVerdict:
        """Judge a request's rows and count them for its streams; see `RowsVerdict`.

        Rows the key sent before (a retry, a nightly re-score) are not counted again: a repeat
        tells a caller nothing it was not told. `judged` is `judge(model, rows)` when it was
        computed already; None judges here.
        """
        guard = self._models.get(model)
        if guard is None:
            return ANSWER
        if judged is not None and judged.shape != (rows.shape[0],):
            raise ValueError(f"judged holds {judged.shape} verdicts for {rows.shape[0]} rows")
        key_stream = f"key:{key_id}"
        judgement = (_judge_one if rows.shape[0] == 1 else _judge_many)(guard, key_stream, rows, judged)
        if isinstance(judgement, RowsVerdict):
            return judgement
        flags, verdicts = judgement
        atypical = sum(flags) if isinstance(flags, list) else int(np.count_nonzero(flags))
        streams = (
            (StreamKind.KEY, key_stream),
            (StreamKind.ACCOUNT, f"account:{account}"),
            (StreamKind.NETWORK, f"net:{network}"),
            (StreamKind.MODEL, f"model:{model}"),
        )
        refuse = False
        if atypical:
            suspect = self._is_suspect(guard, key_stream)  # read before this request counts
            for kind, stream in streams:
                if self._is_alarmed(model, stream):
                    refuse = refuse or kind in HELD or suspect
        raised: list[StreamAlarm] = []
        for (kind, stream), alarm in zip(streams, guard.watch.add_all([s for _, s in streams], flags), strict=True):
            if alarm is not None:
                raised.append(StreamAlarm(kind, stream, alarm))
                self._remember(model, stream)
                refuse = refuse or kind in REFUSING
        return RowsVerdict(atypical, tuple(raised), refuse, verdicts)

    @staticmethod
    def _is_suspect(guard: _ModelGuard, key_stream: str) -> bool:
        # A network holds benign callers too (a NAT, an office, a proxy): its alarm refuses a
        # key's atypical rows only when the key's own rows so far hold more atypical ones than
        # benign traffic does (at least two, and a share above the tolerated rate). A customer
        # who shares a network with a thief keeps its answers; a Sybil key, whose rows are
        # mostly synthetic, is refused from its second atypical row on.
        counts = guard.watch.snapshot(key_stream)
        if counts is None or counts.atypical < MIN_OWN_ATYPICAL:
            return False
        return counts.atypical > guard.watch.config.tolerated_rate * counts.rows

    def _is_alarmed(self, model: str, stream: str) -> bool:
        return f"{stream}@{model}" in self._alarmed

    def _remember(self, model: str, stream: str) -> None:
        marked = f"{stream}@{model}"
        self._alarmed[marked] = None
        self._alarmed.move_to_end(marked)
        if len(self._alarmed) > MAX_ALARMED_STREAMS:
            self._alarmed.popitem(last=False)
