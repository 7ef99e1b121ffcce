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


@dataclass
class Window:
    """What the module counted in one window; ``end`` is the capture time of the PUBLISH that
    closed it (None: still open when the capture ends)."""

    start: float | None
    end: float | None
    records: dict[Key, list[int]] = field(default_factory=dict)  # key -> [bytes_in, bytes_out]
    dropped: int = 0  # datagrams the exhausted pool did not count

    def flows(self) -> list[Flow]:
        return [Flow(local_address=k[0], remote_address=k[1], local_port=k[2], remote_port=k[3], protocol=k[4],
                     bytes_in=b[0], bytes_out=b[1]) for k, b in self.records.items()]


def reduce_windows(datagrams: Iterable[Datagram], cap: int = 64) -> list[Window]:
    """Split at each security PUBLISH and count each window as the module's pool does."""
    windows = [Window(None, None)]
    last_publish: float | None = None
    for d in sorted(datagrams, key=lambda d: d.time):
        if d.security_publish and (last_publish is None or d.time - last_publish >= SAME_COLLECTION):
            windows[-1].end = d.time
            windows.append(Window(d.time, None))
            last_publish = d.time
        window = windows[-1]
        entry = window.records.get(d.key)
        if len(window.records) >= cap:
            window.dropped += 1  # no free object: not even a known flow is updated
            continue
        if entry is None:
            entry = window.records[d.key] = [0, 0]
        entry[1 if d.outbound else 0] += d.nbytes
    return windows


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


#: Seconds around a window's end where the wire's order and the module's may differ: a busy board
#: counts a datagram before its collection that crosses the wire after its PUBLISH, or the reverse.
NEAR = 0.25


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
