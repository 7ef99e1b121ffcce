"""Matching the flows a test expects against the flows a device reported.

The module reports flows per collection window, aggregated by (local, remote, ports, protocol);
a connection that spans windows appears in each. So reported flows are first summed across the
windows by that key, then each expected :class:`FlowSpec` (a partial description: unset fields match
anything, byte counts exact or as minimums) is paired with a distinct summed flow, whatever the
order (bipartite matching, so a loose spec cannot steal the only flow a strict one fits). Flows no
spec claims are split into *background* (the device's own MQTT, NTP and DNS traffic, or whatever
``background`` says) and *extra*: extras are allowed but reported.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from ipaddress import ip_address

from harness.telemetry.model import Flow, Protocol

MQTT_PORTS = (1883, 8883)


@dataclass(frozen=True)
class FlowSpec:
    """An expected flow; ``None`` fields are not checked. Addresses as text or ipaddress objects."""

    protocol: Protocol | None = None
    local_address: str | None = None
    remote_address: str | None = None
    local_port: int | None = None
    remote_port: int | None = None
    bytes_in: int | None = None  # exact total over the windows
    bytes_out: int | None = None
    min_bytes_in: int = 0
    min_bytes_out: int = 0
    label: str = ""

    def matches(self, flow: Flow) -> bool:
        if self.protocol is not None and flow.protocol != self.protocol:
            return False
        if self.local_address is not None and flow.local_address != ip_address(self.local_address):
            return False
        if self.remote_address is not None and flow.remote_address != ip_address(self.remote_address):
            return False
        if self.local_port is not None and flow.local_port != self.local_port:
            return False
        if self.remote_port is not None and flow.remote_port != self.remote_port:
            return False
        if self.bytes_in is not None and flow.bytes_in != self.bytes_in:
            return False
        if self.bytes_out is not None and flow.bytes_out != self.bytes_out:
            return False
        return flow.bytes_in >= self.min_bytes_in and flow.bytes_out >= self.min_bytes_out

    def describe(self) -> str:
        proto = self.protocol.name if self.protocol is not None else "any"
        local = f"{self.local_address or '*'}:{self.local_port if self.local_port is not None else '*'}"
        remote = f"{self.remote_address or '*'}:{self.remote_port if self.remote_port is not None else '*'}"
        bytes_ = []
        for name, exact, least in (("in", self.bytes_in, self.min_bytes_in),
                                   ("out", self.bytes_out, self.min_bytes_out)):
            if exact is not None:
                bytes_.append(f"{name}={exact}")
            elif least:
                bytes_.append(f"{name}>={least}")
        text = f"{proto} {local}->{remote}" + (f" [{' '.join(bytes_)}]" if bytes_ else "")
        return f"{self.label}: {text}" if self.label else text


def describe_flow(flow: Flow) -> str:
    return (f"{flow.protocol.name} {flow.local_address}:{flow.local_port}->"
            f"{flow.remote_address}:{flow.remote_port} in={flow.bytes_in} out={flow.bytes_out}")


def default_background(broker_ports: Iterable[int] = MQTT_PORTS) -> tuple[FlowSpec, ...]:
    """The device's own traffic: MQTT to the broker, NTP, DNS, DHCP."""
    ports = sorted(set(broker_ports) | set(MQTT_PORTS))
    return (*(FlowSpec(protocol=Protocol.TCP, remote_port=p, label="mqtt") for p in ports),
            FlowSpec(protocol=Protocol.UDP, remote_port=123, label="ntp"),
            FlowSpec(protocol=Protocol.UDP, remote_port=53, label="dns"),
            FlowSpec(protocol=Protocol.UDP, local_port=68, remote_port=67, label="dhcp"))


def background_label(flow: Flow, background: Sequence[FlowSpec]) -> str | None:
    """The label of the background spec ``flow`` matches (mqtt, ntp, dns, dhcp), or None."""
    return next((spec.label or "background" for spec in background if spec.matches(flow)), None)


def sum_windows(flows: Iterable[Flow]) -> list[Flow]:
    """Sum byte counts of flows with the same key, keeping first-seen order."""
    totals: dict[tuple[object, ...], Flow] = {}
    for f in flows:
        prev = totals.get(f.key)
        totals[f.key] = f if prev is None else dataclasses.replace(
            prev, bytes_in=prev.bytes_in + f.bytes_in, bytes_out=prev.bytes_out + f.bytes_out)
    return list(totals.values())


@dataclass
class FlowMatch:
    matched: list[tuple[FlowSpec, Flow]] = field(default_factory=list)
    missing: list[FlowSpec] = field(default_factory=list)
    extra: list[Flow] = field(default_factory=list)
    background: list[Flow] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.missing

    def describe(self) -> str:
        lines = [f"matched {len(self.matched)}, missing {len(self.missing)}, extra {len(self.extra)}, "
                 f"background {len(self.background)}"]
        lines += [f"  missing: {s.describe()}" for s in self.missing]
        lines += [f"  matched: {s.describe()}  <=  {describe_flow(f)}" for s, f in self.matched]
        lines += [f"  extra:   {describe_flow(f)}" for f in self.extra]
        lines += [f"  background: {describe_flow(f)}" for f in self.background]
        return "\n".join(lines)


def match_flows(expected: Sequence[FlowSpec], reported: Iterable[Flow],
                background: Sequence[FlowSpec] = ()) -> FlowMatch:
    """Pair each spec with a distinct summed flow (maximum bipartite matching)."""
    flows = sum_windows(reported)
    candidates = [[j for j, f in enumerate(flows) if spec.matches(f)] for spec in expected]
    owner: dict[int, int] = {}  # flow index -> spec index

    def augment(i: int, seen: set[int]) -> bool:
        for j in candidates[i]:
            if j in seen:
                continue
            seen.add(j)
            if j not in owner or augment(owner[j], seen):
                owner[j] = i
                return True
        return False

    for i in range(len(expected)):
        augment(i, set())
    result = FlowMatch()
    by_spec = {i: j for j, i in owner.items()}
    for i, spec in enumerate(expected):
        if i in by_spec:
            result.matched.append((spec, flows[by_spec[i]]))
        else:
            result.missing.append(spec)
    for j, f in enumerate(flows):
        if j in owner:
            continue
        (result.background if any(b.matches(f) for b in background) else result.extra).append(f)
    return result
