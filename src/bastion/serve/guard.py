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
  broad to refuse on: its alarm is an alert.
"""

from __future__ import annotations

import enum
import ipaddress
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from bastion.serve.detect import Alarm, RowJudge, StreamConfig, StreamWatch, TrainingProfile
from bastion.serve.spec import ServingSpec

# Streams remembered as alarmed, at most (least recently alarmed forgotten first).
MAX_ALARMED_STREAMS = 100_000


class StreamKind(enum.StrEnum):
    """Whose traffic a stream adds up; the value is the stream id's prefix."""

    KEY = "key"
    ACCOUNT = "account"
    NETWORK = "net"
    MODEL = "model"


# Streams whose alarm refuses the request: a caller can be held to them.
REFUSING = (StreamKind.KEY, StreamKind.ACCOUNT, StreamKind.NETWORK)


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
    """

    atypical: int
    alarms: tuple[StreamAlarm, ...]
    refuse: bool


ANSWER = RowsVerdict(0, (), False)


def source_network(address: str) -> str:
    """The network a client address belongs to: its IPv4 /24 or IPv6 /48 ("unknown" as is)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    prefix = 24 if ip.version == 4 else 48
    return str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False))


class RequestGuard:
    """The before-answer checks of every served model that ships a training profile.

    Not thread-safe: the gateway calls it from its event loop, one request at a time.
    """

    def __init__(self, specs: Mapping[str, ServingSpec], config: StreamConfig | None = None) -> None:
        self._judges: dict[str, RowJudge] = {}
        for name, spec in specs.items():
            if spec.profile:
                profile = TrainingProfile.from_dict(spec.profile)
                self._judges[name] = RowJudge(profile, spec.input.minimum, spec.input.maximum)
        self._watch = StreamWatch(config or StreamConfig())
        self._alarmed: OrderedDict[str, None] = OrderedDict()

    def guards(self, model: str) -> bool:
        """Whether `model` has a profile to judge rows against."""
        return model in self._judges

    def check(self, model: str, key_id: str, account: str, network: str, rows: NDArray[np.float32]) -> RowsVerdict:
        """Judge a request's rows and count them for its streams; see `RowsVerdict`."""
        judge = self._judges.get(model)
        if judge is None:
            return ANSWER
        flags = judge.judge(rows)
        streams = (
            (StreamKind.KEY, f"key:{key_id}"),
            (StreamKind.ACCOUNT, f"account:{account}"),
            (StreamKind.NETWORK, f"net:{network}"),
            (StreamKind.MODEL, f"model:{model}"),
        )
        atypical = int(np.count_nonzero(flags))
        raised: list[StreamAlarm] = []
        refuse = False
        for kind, stream in streams:
            # A stream's counts are kept per model: another model's profile says nothing here.
            counted = stream if kind is StreamKind.MODEL else f"{stream}@{model}"
            if atypical and kind in REFUSING and counted in self._alarmed:
                refuse = True
            alarm = self._watch.add(counted, flags)
            if alarm is not None:
                raised.append(StreamAlarm(kind, stream, alarm))
                if kind in REFUSING:
                    self._remember(counted)
                    refuse = True
        return RowsVerdict(atypical, tuple(raised), refuse)

    def _remember(self, stream: str) -> None:
        self._alarmed[stream] = None
        self._alarmed.move_to_end(stream)
        if len(self._alarmed) > MAX_ALARMED_STREAMS:
            self._alarmed.popitem(last=False)
