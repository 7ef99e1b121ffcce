"""The module's collection windows, predicted from what it counted (:mod:`harness.traffic.capture`).

A window ends when the module collects; in ACTIVE state it publishes the result at once, so each
security PUBLISH the board sends marks the end of a window on the capture's own clock (no guess
about clocks or latency). The datagrams before it are that window's, the ones after the next's.

Within a window the module keeps one record per (local, remote, local port, remote port,
protocol) in a pool of ``cap`` flow objects; an object is taken *before* the lookup and given back
on an update, so once ``cap`` flows exist nothing more is counted in that window — not even the
bytes of flows already recorded (spec 3.2). :func:`reduce_windows` applies exactly that.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from harness.telemetry.flowmatch import describe_flow
from harness.telemetry.model import Flow
from harness.traffic.capture import Datagram, Key

#: Publishes closer than this are one collection: a PENDING -> ACTIVE second sends two, the kept
#: message and a fresh one, in the same tick (milliseconds apart). It must stay well under a second:
#: the kept message goes out one second after the hub returns, so the next collection's publish can
#: follow it 1.0 s later, and merging those two loses the end of a window (seen over TLS, where the
#: first connection comes late, as a burst window merged into the next).
SAME_COLLECTION = 0.5

#: PENDING -> ACTIVE (spec 3.3): the message kept from a collection made while the hub was away goes
#: out one second after the module sees its hub connected. So the first security PUBLISH on a
#: connection may end a window the module closed earlier, at any moment from the window's start to
#: this long before that PUBLISH; or at the PUBLISH itself, when the hub was connected before the
#: collection (a board that connects before its first collection).
KEPT_DELAY = 1.0

#: Seconds around a window's end where the wire's order and the module's may differ: a busy board
#: counts a datagram before its collection that crosses the wire after its PUBLISH, or the reverse.
NEAR = 0.25


@dataclass
class Window:
    """What the module counted in one window; ``end`` is the capture time of the PUBLISH that
    closed it (None: still open when the capture ends), or for an alternative of a kept window
    (:func:`candidate_windows`) the moment the module may have collected it."""

    start: float | None
    end: float | None
    records: dict[Key, list[int]] = field(default_factory=dict)  # key -> [bytes_in, bytes_out]
    dropped: int = 0  # datagrams the exhausted pool did not count
    index: int = 0  # its place among :func:`reduce_windows`'s windows (alternatives share it)
    kept: bool = False  # ended by a connection's first security PUBLISH: collected then or earlier

    def flows(self) -> list[Flow]:
        return [Flow(local_address=k[0], remote_address=k[1], local_port=k[2], remote_port=k[3], protocol=k[4],
                     bytes_in=b[0], bytes_out=b[1]) for k, b in self.records.items()]


def _ends(ordered: Sequence[Datagram]) -> list[tuple[int, bool]]:
    """The datagrams (by position) that end a window, and whether each is its connection's first
    security PUBLISH (so possibly a kept message)."""
    ends: list[tuple[int, bool]] = []
    published: set[Key] = set()
    last: float | None = None
    for i, d in enumerate(ordered):
        if not d.security_publish:
            continue
        first = d.key not in published
        published.add(d.key)
        if last is None or d.time - last >= SAME_COLLECTION:
            ends.append((i, first))
            last = d.time
    return ends


def _count(ordered: Sequence[Datagram], start: float | None, cuts: Sequence[tuple[int, float]], cap: int,
           index: int = 0) -> list[Window]:
    """Count ``ordered`` as the module's pool does, a new window from each cut (a position in
    ``ordered`` and the time it stands for)."""
    windows = [Window(start, None, index=index)]
    pending = iter(cuts)
    cut = next(pending, None)
    for i, d in enumerate(ordered):
        while cut is not None and i >= cut[0]:
            windows[-1].end = cut[1]
            windows.append(Window(cut[1], None, index=windows[-1].index + 1))
            cut = next(pending, None)
        window = windows[-1]
        entry = window.records.get(d.key)
        if len(window.records) >= cap:
            window.dropped += 1  # no free object: not even a known flow is updated
            continue
        if entry is None:
            entry = window.records[d.key] = [0, 0]
        entry[1 if d.outbound else 0] += d.nbytes
    for _, time in [*([cut] if cut is not None else []), *pending]:  # cuts past the last datagram
        windows[-1].end = time
        windows.append(Window(time, None, index=windows[-1].index + 1))
    return windows


def reduce_windows(datagrams: Iterable[Datagram], cap: int = 64) -> list[Window]:
    """Split at each security PUBLISH and count each window as the module's pool does."""
    ordered = sorted(datagrams, key=lambda d: d.time)
    ends = _ends(ordered)
    windows = _count(ordered, None, [(i, ordered[i].time) for i, _ in ends], cap)
    for window, (_, kept) in zip(windows, ends, strict=False):  # the last window is still open
        window.kept = kept
    return windows


def candidate_windows(datagrams: Iterable[Datagram], cap: int = 64) -> list[Window]:
    """The windows the module may have made of the capture: :func:`reduce_windows`'s, and for each
    window a connection's first security PUBLISH ended, the pairs it and the next one make when the
    module collected earlier: cut before each datagram from the window's start to :data:`KEPT_DELAY`
    before the PUBLISH, the PUBLISH then inside the next window. A reported window must equal one of
    these (:func:`judge_window` allows :data:`NEAR` at their ends, as at any window's)."""
    ordered = sorted(datagrams, key=lambda d: d.time)
    windows = reduce_windows(ordered, cap)
    ends = [i for i, _ in _ends(ordered)] + [len(ordered)]
    alternatives: list[Window] = []
    for k, window in enumerate(windows[:-1]):
        if not window.kept:
            continue
        span = ordered[ends[k - 1] if k else 0:ends[k + 1]]
        latest = ordered[ends[k]].time - KEPT_DELAY
        counted = sum(1 for d in span if d.time <= latest)
        for position in range(1, counted + 1):  # window k keeps span[:position]
            cut = min(span[position].time, latest) if position < len(span) else latest
            pair = _count(span, window.start, [(position, cut)], cap, index=k)
            pair[1].end = windows[k + 1].end
            alternatives += pair
    return windows + alternatives


def same_records(predicted: Sequence[Flow], reported: Sequence[Flow]) -> tuple[list[Flow], list[Flow]]:
    """(predicted but not reported, reported but not predicted), records compared whole."""
    def key(f: Flow) -> tuple[object, ...]:
        return (*f.key, f.bytes_in, f.bytes_out)

    left = {key(f): f for f in predicted}
    right = {key(f): f for f in reported}
    return [f for k, f in left.items() if k not in right], [f for k, f in right.items() if k not in left]


def describe_difference(missing: Sequence[Flow], unexpected: Sequence[Flow]) -> str:
    lines = [f"  predicted, not reported: {describe_flow(f)}" for f in missing]
    lines += [f"  reported, not predicted: {describe_flow(f)}" for f in unexpected]
    return "\n".join(lines)


def judge_window(flows: Sequence[Flow], windows: Sequence[Window], datagrams: Sequence[Datagram],
                 near: float = NEAR) -> str | None:
    """None when the reported ``flows`` are a predicted window exactly, or differ from the closest one
    only in records that had datagrams within ``near`` s of its ends (and then no record the capture
    does not hold and no bytes beyond it); else the difference, described."""
    closed = [w for w in windows if w.end is not None]
    if any(not any(same_records(w.flows(), flows)) for w in closed):
        return None
    if not closed:
        return "the capture holds no window end (no security PUBLISH)"
    keys = {f.key for f in flows}

    def distance(w: Window) -> tuple[int, int]:  # most keys shared first, then fewest records apart
        return (-len(keys & set(w.records)), sum(map(len, same_records(w.flows(), flows))))

    window = min(closed, key=distance)
    start, end = window.start or 0.0, window.end or 0.0
    borderline = {d.key for d in datagrams if abs(d.time - start) < near or abs(d.time - end) < near}
    totals: dict[Key, list[int]] = {}
    for d in datagrams:
        totals.setdefault(d.key, [0, 0])[1 if d.outbound else 0] += d.nbytes
    missing, unexpected = same_records(window.flows(), flows)
    bad_unexpected = [f for f in unexpected if f.key not in totals or f.bytes_in > totals[f.key][0]
                      or f.bytes_out > totals[f.key][1] or f.key not in borderline]
    bad_missing = [f for f in missing if f.key not in borderline]
    if bad_unexpected or bad_missing:
        return describe_difference(bad_missing, bad_unexpected)
    return None
