"""SERVE: does a stream of requests hold more atypical rows than benign traffic does?

A stream is any string the gateway chooses: "key:K41", "account:acme", "net:203.0.113.0/24",
"model:fraud@7". Ten keys that each stay under a per-key test add up on their account's or
their network's stream; the model's own stream sees everything.

`StreamWatch.add(stream, atypical)` takes the `RowJudge` verdicts of a request's rows and keeps,
per stream, two tests of the share of atypical rows:

- window: the share among the stream's last `window` rows, once it has sent
  `window_min_rows`. Uniform or box probing is almost all atypical rows and trips it within
  tens of queries.
- cumulative: everything the stream has sent, against a tolerated rate. The alarm fires when
  a count of atypical rows that high is less likely than `p_value` for a stream whose rows are
  atypical at the tolerated rate (a Chernoff bound on the binomial tail, never more eager than
  the exact test). Mixing synthetic rows with benign-looking fillers keeps the window share
  low, but the count still grows faster than the tolerated rate allows, and the evidence adds
  up: one synthetic row in five is caught after a few hundred rows, one in ten later, while a
  benign client whose rows are atypical at under the tolerated rate never is, however long
  it sends. The default tolerated rate, max(4 x the profile's false-alarm rate, 3 %), leaves
  room for clients unlike the training data: a client shifted by 0.3 sd in every feature has
  2 % of its rows atypical.

Each stream alarms once (until it is forgotten). Memory is bounded: `max_streams` streams, the
least recently seen forgotten first, each a few hundred bytes.

`RepeatFilter.fresh(stream, rows)` says which rows the stream has not sent before (a bounded
memory of its last distinct rows). A retry or a nightly re-score of the same records is not
new evidence, and counting it again would let an attacker dilute its synthetic rows with
repeats of one benign row for free; the gateway feeds only fresh rows to the streams.
"""

from __future__ import annotations

import hashlib
import logging
import math
import secrets
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from bastion.errors import ArtifactError, ConfigError
from bastion.serve.detect.alarms import Alarm, AlarmKind
from bastion.serve.detect.statistics import binomial_tail_bound

logger = logging.getLogger(__name__)

BoolArray = npt.NDArray[np.bool_]
DigestArray = npt.NDArray[np.uint32]
MAX_STREAM_ID = 512


@dataclass(frozen=True, slots=True)
class StreamConfig:
    """Thresholds and bounds of a `StreamWatch`.

    Attributes:
        max_streams: streams tracked at once; the least recently seen is forgotten beyond it.
        window: recent rows over which the window share is taken.
        window_min_rows: rows a stream must have sent before the window test applies.
        window_share: alarm when at least this share of the window is atypical.
        tolerated_rate: the rate of atypical rows the cumulative test accepts without alarm.
            `StreamConfig.for_rate(profile.false_alarm_rate)` sets it to max(4 x rate, 0.03).
        p_value: the cumulative test alarms when the stream's count is less likely than this
            at the tolerated rate (1e-9: with thousands of streams tested after every request,
            a benign stream at the tolerated rate still practically never alarms).
        min_atypical: atypical rows a stream needs before the cumulative test applies.
    """

    max_streams: int = 65_536
    window: int = 64
    window_min_rows: int = 20
    window_share: float = 0.3
    tolerated_rate: float = 0.03
    p_value: float = 1e-9
    min_atypical: int = 5

    def __post_init__(self) -> None:
        for name, value in (
            ("max_streams", self.max_streams),
            ("window", self.window),
            ("window_min_rows", self.window_min_rows),
            ("min_atypical", self.min_atypical),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"stream {name} must be a positive integer, got {value!r}", hint="Use a count >= 1.")
        if self.window > 65_536:
            raise ConfigError(f"stream window must be at most 65536, got {self.window}", hint="Use a shorter window.")
        if not 0.0 < self.window_share <= 1.0:
            raise ConfigError(f"stream window_share must be in (0, 1], got {self.window_share}", hint="Use a fraction.")
        if not 0.0 < self.tolerated_rate < 1.0:
            raise ConfigError(
                f"stream tolerated_rate must be in (0, 1), got {self.tolerated_rate}",
                hint="Use a fraction such as 0.03.",
            )
        if not 0.0 < self.p_value < 0.5:
            raise ConfigError(
                f"stream p_value must be in (0, 0.5), got {self.p_value}", hint="Use a tiny one, e.g. 1e-9."
            )

    @classmethod
    def for_rate(cls, false_alarm_rate: float, **changes: float) -> StreamConfig:
        """The defaults, with the tolerated rate set from a profile's per-row false-alarm rate."""
        tolerated = max(4.0 * false_alarm_rate, 0.03)
        return cls(**{"tolerated_rate": tolerated, **changes})  # type: ignore[arg-type]  # validated in __post_init__


@dataclass(frozen=True, slots=True)
class StreamStatistics:
    """One stream's counters at a moment, for metrics and dashboards.

    Attributes:
        rows: rows counted.
        atypical: atypical rows among them.
        window_share: share of atypical rows in the recent window.
        evidence: -log10 of the cumulative test's p-value bound (alarm at -log10(p_value)).
        alarmed: whether the stream has alarmed.
    """

    rows: int
    atypical: int
    window_share: float
    evidence: float
    alarmed: bool


class _StreamState:
    __slots__ = ("alarmed", "atypical", "bits", "rows")

    def __init__(self) -> None:
        self.rows = 0
        self.atypical = 0
        self.bits = 0  # the last `window` verdicts, newest in the lowest bit
        self.alarmed = False


class StreamWatch:
    """Per-stream counters of atypical rows, with a window test and a cumulative test.

    Thread-safe (a lock around each call).

    Args:
        config: thresholds and bounds.

    Example:
        >>> watch = StreamWatch(StreamConfig.for_rate(profile.false_alarm_rate))   # doctest: +SKIP
        >>> atypical = judge.judge(rows)[fresh]                                     # doctest: +SKIP
        >>> for stream in (f"key:{key_id}", f"account:{account}", f"model:{ref}"):  # doctest: +SKIP
        ...     if (alarm := watch.add(stream, atypical)) is not None:
        ...         refuse(alarm)
    """

    def __init__(self, config: StreamConfig = StreamConfig()) -> None:  # frozen, so one shared default is safe
        self.config = config
        self._streams: OrderedDict[str, _StreamState] = OrderedDict()
        self._mask = (1 << config.window) - 1
        self._log_p = -math.log(config.p_value)
        self._lock = threading.Lock()

    def add(self, stream: str, atypical: npt.ArrayLike) -> Alarm | None:
        """Count a request's rows for a stream; the alarm it raises now, if any.

        Args:
            stream: the stream's id (at most `MAX_STREAM_ID` characters).
            atypical: the verdicts of the request's (fresh) rows, True for atypical.

        Returns:
            An `extraction.out-of-distribution` alarm the first time the stream crosses either
            test (its `key_id` and `stream` are the stream id), else None.

        Raises:
            ArtifactError: the stream id is too long or `atypical` is not one-dimensional.
        """
        return self.add_all((stream,), atypical)[0]

    def add_all(self, streams: Sequence[str], atypical: npt.ArrayLike) -> list[Alarm | None]:
        """`add` for several streams that the same rows count for (a key, its account, ...).

        Returns:
            One entry per stream, in order: the alarm it raises now, or None.

        Raises:
            ArtifactError: a stream id is too long or `atypical` is not one-dimensional.
        """
        if isinstance(atypical, list):  # plain Python already (the gateway's one-row requests)
            values = [bool(flag) for flag in atypical]
        else:
            flags = np.asarray(atypical, dtype=np.bool_)
            if flags.ndim != 1:
                raise ArtifactError(
                    f"stream {streams[0][:64] if streams else ''}: verdicts of shape {flags.shape}, expected (rows,)"
                )
            values = flags.tolist()  # one numpy call; the rest is plain Python
        for stream in streams:
            if len(stream) > MAX_STREAM_ID:
                raise ArtifactError(f"stream id of {len(stream)} characters, at most {MAX_STREAM_ID}")
        n = len(values)
        count = sum(values)
        raised: list[Alarm | None] = []
        with self._lock:
            for stream in streams:
                state = self._state_for(stream)
                state.rows += n
                state.atypical += count
                state.bits = self._shift_in(state.bits, values, n, count)
                alarm = None
                if not state.alarmed and n:
                    alarm = self._window_alarm(stream, state) or self._cumulative_alarm(stream, state)
                    state.alarmed = alarm is not None
                raised.append(alarm)
        for alarm in raised:
            if alarm is not None:
                logger.info("stream watch: %s", alarm.message)
        return raised

    def alarmed(self, stream: str) -> bool:
        """Whether `stream` has alarmed (False for a stream never seen or forgotten)."""
        state = self._streams.get(stream)
        return state is not None and state.alarmed

    def snapshot(self, stream: str) -> StreamStatistics | None:
        """The stream's counters (None if it is not tracked)."""
        state = self._streams.get(stream)
        if state is None:
            return None
        seen = min(state.rows, self.config.window)
        bound = binomial_tail_bound(state.atypical, state.rows, self.config.tolerated_rate)
        return StreamStatistics(
            rows=state.rows,
            atypical=state.atypical,
            window_share=state.bits.bit_count() / seen if seen else 0.0,
            evidence=bound / math.log(10),
            alarmed=state.alarmed,
        )

    def forget(self, stream: str) -> None:
        """Drop a stream's counters and alarm; unknown streams are ignored."""
        with self._lock:
            self._streams.pop(stream, None)

    def __len__(self) -> int:
        return len(self._streams)

    def _state_for(self, stream: str) -> _StreamState:
        state = self._streams.get(stream)
        if state is not None:
            self._streams.move_to_end(stream)
            return state
        state = _StreamState()
        self._streams[stream] = state
        if len(self._streams) > self.config.max_streams:
            evicted, _ = self._streams.popitem(last=False)
            logger.debug("stream watch: forgot idle stream %s (max_streams=%d)", evicted, self.config.max_streams)
        return state

    def _shift_in(self, bits: int, flags: list[bool], n: int, count: int) -> int:
        window = self.config.window
        if count == 0:  # the common case: nothing to set, only to shift out
            return (bits << min(n, window)) & self._mask
        if count == n and n >= window:
            return self._mask
        for flag in flags[-window:]:
            bits = ((bits << 1) | flag) & self._mask
        return bits

    def _window_alarm(self, stream: str, state: _StreamState) -> Alarm | None:
        cfg = self.config
        if state.rows < cfg.window_min_rows:
            return None
        share = state.bits.bit_count() / min(state.rows, cfg.window)
        if share < cfg.window_share:
            return None
        return Alarm(
            AlarmKind.OUT_OF_DISTRIBUTION.value,
            stream,
            state.rows,
            share,
            cfg.window_share,
            f"stream {stream} after {state.rows} rows: {share:.0%} of its last {min(state.rows, cfg.window)} rows "
            "lie outside the training data's range or joint distribution, as synthetic queries for model "
            "extraction do",
        )

    def _cumulative_alarm(self, stream: str, state: _StreamState) -> Alarm | None:
        cfg = self.config
        if state.atypical < cfg.min_atypical:
            return None
        bound = binomial_tail_bound(state.atypical, state.rows, cfg.tolerated_rate)
        if bound < self._log_p:
            return None
        evidence = bound / math.log(10)
        return Alarm(
            AlarmKind.OUT_OF_DISTRIBUTION.value,
            stream,
            state.rows,
            evidence,
            self._log_p / math.log(10),
            f"stream {stream} after {state.rows} rows: {state.atypical} of them ({state.atypical / state.rows:.1%}) "
            f"lie outside the training data's range or joint distribution, against {cfg.tolerated_rate:.1%} "
            f"tolerated (p < 1e-{evidence:.0f}), as synthetic queries mixed with ordinary ones for model "
            "extraction do",
        )


class RepeatFilter:
    """Which rows a stream sends for the first time, exactly, within a bounded memory.

    Each stream keeps the digests of its last `memory` distinct rows (4 bytes each); a row whose
    float32 bytes match one of them, or an earlier row of the same batch, is a repeat. The
    digest is a keyed BLAKE2b of the row's bytes, the key random per filter: two given rows
    collide with probability 2^-32, and without the key nobody can aim at a collision. So a
    fresh row is taken for a repeat about once per million lookups against a full memory, and
    a repeat is never taken for a fresh row.

    Args:
        n_features: row width.
        memory: distinct rows remembered per stream.
        max_streams: streams tracked; the least recently seen is forgotten beyond it.
        seed: fixes the hash key (tests); None draws it from `secrets`.
    """

    def __init__(
        self, n_features: int, memory: int = 4096, max_streams: int = 4096, *, seed: int | None = None
    ) -> None:
        if n_features < 1 or memory < 1 or max_streams < 1:
            raise ConfigError(
                f"repeat filter needs n_features, memory and max_streams >= 1, got {n_features}, {memory}, {max_streams}"
            )
        self.n_features = n_features
        self.memory = memory
        self.max_streams = max_streams
        self._digest = RowDigest(n_features, seed=seed)
        self._streams: OrderedDict[str, DigestRing] = OrderedDict()
        self._lock = threading.Lock()

    def fresh(self, stream: str, rows: npt.ArrayLike) -> BoolArray:
        """True for each row the stream has not sent before; those rows are remembered.

        Raises:
            ArtifactError: `rows` is not of shape (n, n_features).
        """
        digests = self._digest.of(rows)
        with self._lock:
            return self._ring(stream).add(digests)

    def fresh_row(self, stream: str, row: bytes) -> bool:
        """`fresh` for one row given as its float32 bytes, without a numpy call (the common request).

        Raises:
            ArtifactError: `row` is not one row's bytes.
        """
        digest = self._digest.of_row(row)
        with self._lock:
            return self._ring(stream).add_one(digest)

    def _ring(self, stream: str) -> DigestRing:
        ring = self._streams.get(stream)
        if ring is None:
            ring = DigestRing(self.memory)
            self._streams[stream] = ring
            if len(self._streams) > self.max_streams:
                self._streams.popitem(last=False)
        else:
            self._streams.move_to_end(stream)
        return ring

    def state_bytes(self) -> int:
        """Memory held by the digests and their filters, in bytes (at most `memory * 8 * max_streams`)."""
        return sum(ring.nbytes for ring in self._streams.values())

    def forget(self, stream: str) -> None:
        with self._lock:
            self._streams.pop(stream, None)

    def __len__(self) -> int:
        return len(self._streams)


class RowDigest:
    """A keyed BLAKE2b digest (4 bytes) of each row's float32 bytes (see `RepeatFilter`).

    The key is random per digest: nobody outside the process can compute a digest, so nobody
    can make a new row pass for an earlier one (it would be answered and not counted).
    """

    def __init__(self, n_features: int, *, seed: int | None = None) -> None:
        self.n_features = n_features
        self._key = secrets.token_bytes(16) if seed is None else seed.to_bytes(16, "little")

    def of(self, rows: npt.ArrayLike) -> DigestArray:
        x = np.ascontiguousarray(rows, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != self.n_features:
            raise ArtifactError(
                f"rows of shape {x.shape}, expected (n, {self.n_features})",
                hint="Validate request bodies against the model's input schema first.",
            )
        data = x.tobytes()
        width = 4 * self.n_features
        key = self._key
        digests = b"".join(
            hashlib.blake2b(data[start : start + width], digest_size=4, key=key).digest()
            for start in range(0, len(data), width)
        )
        return np.frombuffer(digests, dtype="<u4").astype(np.uint32)

    def of_row(self, row: bytes) -> int:
        """The digest of one row given as its float32 bytes, as `of` gives it."""
        if len(row) != 4 * self.n_features:
            raise ArtifactError(
                f"a row of {len(row)} bytes, expected {4 * self.n_features} ({self.n_features} float32 values)",
                hint="Validate request bodies against the model's input schema first.",
            )
        return int.from_bytes(hashlib.blake2b(row, digest_size=4, key=self._key).digest(), "little")


# Each DigestRing keeps two Bloom filters over its digests (two bits a digest, from its two 16-bit
# halves; 16 bits of filter per digest remembered): the newer filter takes every digest
# remembered, and when it has taken `memory` of them it becomes the older one and a new filter
# starts. Together they cover at least the last `memory` digests, all the ring holds. A digest in
# neither was never in the ring: fresh, known without comparing it with the whole ring. In the
# gateway that comparison (4,096 digests, 16 KB, on every one-row request) cost more than judging
# the row; the filters turn it into a few byte reads for almost every fresh row. A digest the
# filters may have seen is compared with the ring as before, so the answer stays exact. A full
# filter answers "maybe" for about 1.4 % of fresh digests (the two: under 3 %). The filters are
# allocated on first use and double a stream's memory.
_BLOOM_BITS_PER_DIGEST = 16


class DigestRing:
    """The digests of a stream's last `memory` distinct rows (a ring buffer, with Bloom filters in front)."""

    __slots__ = ("_bits", "_newer", "_older", "_taken", "digests", "next", "size")

    def __init__(self, memory: int) -> None:
        self.digests = np.zeros(memory, dtype=np.uint32)
        self.next = 0
        self.size = 0
        self._bits = max(64, _BLOOM_BITS_PER_DIGEST * memory)
        self._newer: bytearray | None = None  # allocated with the first digest remembered
        self._older: bytearray | None = None
        self._taken = 0  # digests the newer filter holds

    @property
    def nbytes(self) -> int:
        """Memory held by the digests and the filters."""
        filters = sum(len(f) for f in (self._newer, self._older) if f is not None)
        return int(self.digests.nbytes) + filters

    def add(self, digests: DigestArray) -> BoolArray:
        """True for each digest not seen before (nor earlier in `digests`); records those."""
        n = digests.shape[0]
        if n == 1:
            return np.array([self.add_one(int(digests[0]))])
        fresh = ~np.isin(digests, self.digests[: self.size])
        _, first = np.unique(digests, return_index=True)
        once = np.zeros(n, dtype=np.bool_)
        once[first] = True
        fresh &= once
        for digest in digests[fresh].tolist():
            self._remember(digest)
        return fresh

    def add_one(self, digest: int) -> bool:
        """`add` for one digest: True (and recorded) if it was not seen before."""
        if self._maybe_seen(digest) and bool((self.digests[: self.size] == digest).any()):
            return False
        self._remember(digest)
        return True

    def _positions(self, digest: int) -> tuple[int, int]:
        return (digest & 0xFFFF) % self._bits, (digest >> 16) % self._bits

    def _maybe_seen(self, digest: int) -> bool:
        low, high = self._positions(digest)
        for bits in (self._newer, self._older):
            if bits is not None and bits[low >> 3] >> (low & 7) & 1 and bits[high >> 3] >> (high & 7) & 1:
                return True
        return False

    def _remember(self, digest: int) -> None:
        memory = self.digests.shape[0]
        self.digests[self.next] = digest
        self.next = (self.next + 1) % memory
        self.size = min(self.size + 1, memory)
        if self._newer is None:  # both at once: a stream's memory does not grow after its first row
            self._newer, self._older = bytearray(self._bits // 8), bytearray(self._bits // 8)
        elif self._taken >= memory:
            self._older, self._newer, self._taken = self._newer, bytearray(self._bits // 8), 0
        low, high = self._positions(digest)
        self._newer[low >> 3] |= 1 << (low & 7)
        self._newer[high >> 3] |= 1 << (high & 7)
        self._taken += 1
