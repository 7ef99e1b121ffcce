"""The field's telemetry against the bench's, semantically, window by window.

Each security message closes one collection window. The two runs never line up in time (another
boot, another network, the replay's traffic falling a little earlier or later against the
module's window boundaries), so nothing is compared by absolute time or address:

- **Flows** are named by what they are, not where they ran: protocol, the device's port (kept for
  the replayed traffic and for ports below 1024, else ``*``), the peer's port (kept below 1024,
  else ``*``: ephemeral ports differ from run to run). A flow is *replayed traffic* when its remote
  is a peer of the replay and its (protocol, device port) is one the replay re-enacts; the rest is
  the device's own *background* (its MQTT connection, DNS, NTP, DHCP), whose bytes depend on the
  bench's own timing: it is listed, not judged.
- **Windows are aligned by content and relative position**: the windows holding replayed traffic
  are taken in order on each side and grouped so that each group holds the same flows on both
  sides: a bundle window is matched with the bench window at the same position in that sequence;
  when their flows differ because the replay's traffic fell across a window boundary differently,
  the next window (of the side that holds fewer of the flows) joins the group, up to
  :data:`MAX_GROUP` windows a side. A group is then compared byte for byte, per flow: equal bytes
  in and out are a match; anything else is a difference, shown side by side.
- **Events and intervals**: the (event type, collection interval) pairs each side sent, and each
  type's cadence (the median spacing of its events' times, outside gaps), within 1 s.
- **Gaps** in arrivals longer than the longest interval plus :data:`GAP_SLACK` seconds: PENDING,
  or SUSPENDED when longer than the build's pending time; compared by kind and order.
"""

from __future__ import annotations

import ipaddress
import itertools
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from harness.bundle.telemetry import Message
from harness.telemetry.model import Flow, PayloadType

IPv4 = ipaddress.IPv4Address
MAX_GROUP = 4
GAP_SLACK = 5.0
CADENCE_TOLERANCE = 1.0


@dataclass(frozen=True)
class Side:
    """How to read one run's flows: the device's address and the replay's peers and keys."""

    label: str
    device: IPv4
    peers: frozenset[IPv4]
    keys: frozenset[tuple[str, int]]
    boot: int = 0  # messages that closed before the replay began (boot and bring-up): no replayed traffic


@dataclass
class Window:
    index: int  # the message's number on its side (0: the first)
    at: float  # seconds since the side's first message
    kinds: list[str]
    traffic: dict[str, list[int]] = field(default_factory=dict)  # flow -> [records, bytes in, bytes out]
    background: dict[str, list[int]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"index": self.index, "at": round(self.at, 3), "kinds": self.kinds,
                "traffic": self.traffic, "background": self.background}


def flow_name(flow: Flow, side: Side) -> tuple[bool, str]:
    """(is replayed traffic, the flow's name as both sides share it)."""
    proto = flow.protocol.name
    remote = flow.remote_address
    traffic = isinstance(remote, IPv4) and remote in side.peers and (proto, flow.local_port) in side.keys
    device_port = str(flow.local_port) if traffic or flow.local_port < 1024 else "*"
    peer_port = str(flow.remote_port) if flow.remote_port < 1024 else "*"
    if proto == "ICMP":
        return traffic, "ICMP"
    return traffic, f"{proto} device:{device_port} peer:{peer_port}"


def windows_of(messages: Sequence[Message], side: Side) -> list[Window]:
    if not messages:
        return []
    t0 = messages[0].received
    out = []
    for i, m in enumerate(messages):
        w = Window(i, m.received - t0, [e.kind.name for e in m.message.events])
        for e in m.message.events_of(PayloadType.NETWORK_ACTIVITY):
            for f in e.payload.flows:  # type: ignore[union-attr]
                traffic, name = flow_name(f, side)
                traffic = traffic and i >= side.boot
                entry = (w.traffic if traffic else w.background).setdefault(name, [0, 0, 0])
                entry[0] += 1
                entry[1] += f.bytes_in
                entry[2] += f.bytes_out
        out.append(w)
    return out


@dataclass
class Group:
    """Windows of the two sides that hold the same replayed traffic, and how they compare."""

    bundle: list[Window]
    bench: list[Window]
    rows: list[dict[str, Any]]  # flow, bundle [in, out], bench [in, out], same
    same: bool
    how: str

    def to_json(self) -> dict[str, Any]:
        return {"bundle_windows": [w.index for w in self.bundle], "bench_windows": [w.index for w in self.bench],
                "bundle_at": [round(w.at, 3) for w in self.bundle], "bench_at": [round(w.at, 3) for w in self.bench],
                "verdict": "match" if self.same else "differs", "how": self.how, "flows": self.rows}


def _sum(windows: Sequence[Window]) -> dict[str, list[int]]:
    total: dict[str, list[int]] = {}
    for w in windows:
        for name, (records, b_in, b_out) in w.traffic.items():
            entry = total.setdefault(name, [0, 0, 0])
            entry[0] += records
            entry[1] += b_in
            entry[2] += b_out
    return total


def _rows(a: dict[str, list[int]], b: dict[str, list[int]]) -> list[dict[str, Any]]:
    rows = []
    for name in sorted(a.keys() | b.keys()):
        left, right = a.get(name), b.get(name)
        rows.append({"flow": name, "bundle": left[1:] if left else None, "bench": right[1:] if right else None,
                     "bundle_records": left[0] if left else 0, "bench_records": right[0] if right else 0,
                     "same": bool(left and right and left[1:] == right[1:])})
    return rows


def align(bundle: Sequence[Window], bench: Sequence[Window]) -> list[Group]:
    """Group the two sides' traffic windows in order (see the module docstring)."""
    a = [w for w in bundle if w.traffic]
    b = [w for w in bench if w.traffic]
    i = j = 0
    groups = []
    while i < len(a) or j < len(b):
        ga, gb = a[i:i + 1], b[j:j + 1]
        while ga and gb:
            ka, kb = set(_sum(ga)), set(_sum(gb))
            if ka == kb:
                break
            if ka < kb and i + len(ga) < len(a) and len(ga) < MAX_GROUP:
                ga.append(a[i + len(ga)])
            elif kb < ka and j + len(gb) < len(b) and len(gb) < MAX_GROUP:
                gb.append(b[j + len(gb)])
            else:
                break
        ga, gb = _settle_bytes(a, b, i, j, ga, gb)
        sa, sb = _sum(ga), _sum(gb)
        rows = _rows(sa, sb)
        same = bool(ga and gb) and all(r["same"] for r in rows)
        how = ("same position" if len(ga) == len(gb) == 1 else
               f"{len(ga)} bundle window(s) against {len(gb)} bench window(s): the traffic fell across window "
               "boundaries differently, compared as one" if ga and gb else
               "only in the bundle" if ga else "only on the bench")
        groups.append(Group(list(ga), list(gb), rows, same, how))
        i += len(ga)
        j += len(gb)
    return groups


def _settle_bytes(a: Sequence[Window], b: Sequence[Window], i: int, j: int, ga: list[Window],
                  gb: list[Window]) -> tuple[list[Window], list[Window]]:
    """Same flows, other bytes: one side may hold the rest of a flow in its next window (the flow
    crossed a boundary there and not on the other side). Take it in while that makes the bytes
    equal; otherwise keep the groups as they were."""
    if not ga or not gb or set(_sum(ga)) != set(_sum(gb)):
        return ga, gb
    xa, xb = list(ga), list(gb)
    for _ in range(2 * MAX_GROUP):
        sa, sb = _sum(xa), _sum(xb)
        if sa == sb or {k: v[1:] for k, v in sa.items()} == {k: v[1:] for k, v in sb.items()}:
            return xa, xb
        smaller, seq, at = (xa, a, i) if _bytes(sa) < _bytes(sb) else (xb, b, j)
        nxt = at + len(smaller)
        if nxt >= len(seq) or len(smaller) >= MAX_GROUP or not set(seq[nxt].traffic) <= set(_sum(smaller)):
            break
        smaller.append(seq[nxt])
    return ga, gb


def _bytes(total: dict[str, list[int]]) -> int:
    return sum(v[1] + v[2] for v in total.values())


@dataclass
class Gap:
    after: float  # seconds since the side's first message
    length: float
    state: str  # PENDING | SUSPENDED

    def to_json(self) -> dict[str, Any]:
        return {"after": round(self.after, 1), "length": round(self.length, 1), "state": self.state}


def gaps_of(windows: Sequence[Window], messages: Sequence[Message], pending_time_s: float) -> list[Gap]:
    intervals = [e.collection_interval for m in messages for e in m.message.events]
    limit = max(intervals, default=60) + GAP_SLACK
    out = []
    for before, after in itertools.pairwise(windows):
        length = after.at - before.at
        if length > limit:
            out.append(Gap(before.at, length, "SUSPENDED" if length > pending_time_s else "PENDING"))
    return out


def _pairs(messages: Sequence[Message]) -> set[tuple[str, int]]:
    return {(e.kind.name, e.collection_interval) for m in messages for e in m.message.events}


def _cadence(messages: Sequence[Message]) -> dict[str, float]:
    out: dict[str, float] = {}
    by_kind: dict[str, tuple[int, set[int]]] = {}
    for m in messages:
        for e in m.message.events:
            interval, times = by_kind.setdefault(e.kind.name, (e.collection_interval, set()))
            times.add(e.time)
    for kind, (interval, times) in by_kind.items():
        ordered = sorted(times)
        steps = [b - a for a, b in itertools.pairwise(ordered) if b - a <= 2 * interval + 1]
        if steps:
            out[kind] = float(statistics.median(steps))
    return out


@dataclass
class Comparison:
    method: str
    groups: list[Group]
    totals: list[dict[str, Any]]
    events: dict[str, Any]
    cadence: list[dict[str, Any]]
    gaps: dict[str, Any]
    background: list[dict[str, Any]]
    windows: dict[str, list[Window]]
    differences: list[str]

    @property
    def reproduced(self) -> bool:
        return not self.differences

    def to_json(self) -> dict[str, Any]:
        return {"reproduced": self.reproduced, "differences": self.differences, "method": self.method,
                "groups": [g.to_json() for g in self.groups], "totals": self.totals, "events": self.events,
                "cadence": self.cadence, "gaps": self.gaps, "background": self.background,
                "windows": {k: [w.to_json() for w in v] for k, v in self.windows.items()}}


def compare(bundle: Sequence[Message], bench: Sequence[Message], bundle_side: Side, bench_side: Side, *,
            pending_time_s: float) -> Comparison:
    wa, wb = windows_of(bundle, bundle_side), windows_of(bench, bench_side)
    differences: list[str] = []
    groups = align(wa, wb)
    for g in groups:
        if not g.same:
            where = (f"bundle window(s) {', '.join(str(w.index) for w in g.bundle) or '-'} / bench window(s) "
                     f"{', '.join(str(w.index) for w in g.bench) or '-'}")
            flows = "; ".join(f"{r['flow']}: bundle {_io(r['bundle'])}, bench {_io(r['bench'])}"
                              for r in g.rows if not r["same"])
            differences.append(f"replayed traffic differs in {where}: {flows}")
    totals = _rows(_sum(wa), _sum(wb))
    pa, pb = _pairs(bundle), _pairs(bench)
    events = {"bundle": sorted(map(list, pa)), "bench": sorted(map(list, pb)), "same": pa == pb}  # type: ignore[arg-type]
    if pa != pb:
        differences.append(f"event types and intervals differ: only in the bundle {sorted(pa - pb)}, "
                           f"only on the bench {sorted(pb - pa)}")
    ca, cb = _cadence(bundle), _cadence(bench)
    cadence = []
    for kind in sorted(ca.keys() & cb.keys()):
        same = abs(ca[kind] - cb[kind]) <= CADENCE_TOLERANCE
        cadence.append({"kind": kind, "bundle_s": ca[kind], "bench_s": cb[kind], "same": same})
        if not same:
            differences.append(f"{kind} every {ca[kind]:g} s in the bundle, every {cb[kind]:g} s on the bench")
    ga, gb = gaps_of(wa, bundle, pending_time_s), gaps_of(wb, bench, pending_time_s)
    same_gaps = [g.state for g in ga] == [g.state for g in gb]
    if not same_gaps:
        differences.append(f"gaps in the telemetry differ: bundle {[g.state for g in ga] or 'none'}, "
                           f"bench {[g.state for g in gb] or 'none'}")
    gaps = {"bundle": [g.to_json() for g in ga], "bench": [g.to_json() for g in gb], "same": same_gaps}
    background = [{"flow": r["flow"], "bundle_windows": sum(1 for w in wa if r["flow"] in w.background),
                   "bench_windows": sum(1 for w in wb if r["flow"] in w.background)}
                  for r in _rows(_background(wa), _background(wb))]
    return Comparison(__doc__ or "", groups, totals, events, cadence, gaps, background, {"bundle": wa, "bench": wb},
                      differences)


def _background(windows: Sequence[Window]) -> dict[str, list[int]]:
    return {name: [0, 0, 0] for w in windows for name in w.background}


def _io(values: list[int] | None) -> str:
    return "absent" if values is None else f"in {values[0]} out {values[1]}"
