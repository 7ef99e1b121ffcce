"""What a traffic generator did, and the flows the security module must report for it.

Every generator takes a :class:`Target` (the board's address, the run's target policy — required:
traffic goes only to loopback, a lab test network or a network the harness made — and, where the
board's link is captured, the capture as the module counts it) and returns an :class:`Exchange`.

``exchange.flows`` are the records the module must report for the exchange, summed over the
windows it spans: taken from what actually crossed the board's link (retransmissions, delayed
ACKs and all), reduced to the module's capture points (:mod:`harness.traffic.capture`). A formula
for the ideal exchange (payload and header bounds) is kept as a sanity bound: a capture that
differs beyond it fails with both shown. Without a capture the formula is all there is, and the
flows say so (``from_capture`` False).
"""

from __future__ import annotations

import ipaddress
import json
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from harness.errors import CheckFailed
from harness.netpolicy import TargetPolicy
from harness.telemetry.flowmatch import FlowSpec
from harness.telemetry.model import Protocol
from harness.traffic.capture import Datagram, Key

#: How long after a generator returns its packets may still cross (FIN/ACK, a delayed ACK).
SETTLE = 1.0


@dataclass
class Target:
    """Where a generator aims, and what it may learn about the board's link."""

    address: ipaddress.IPv4Address
    policy: TargetPolicy
    capture: Callable[[], list[Datagram]] | None = None
    frames: Callable[[], int] | None = None  # how many frames the capture holds now (a mark)
    harness_address: ipaddress.IPv4Address | None = None  # the harness side of the board's network
    evidence: Path | None = None  # where each exchange and the flows expected of it are kept
    tcp_echo: int | None = 7
    udp_echo: int | None = 7
    icmp: bool = True
    rst_closed_ports: bool = True

    def check(self) -> str:
        """The address as text, once the policy allows it (raises UsageError naming the networks)."""
        return str(self.policy.check(self.address))


@dataclass(frozen=True)
class Bound:
    """The ideal exchange's bytes for one flow key: each direction within [low, high]."""

    key: Key
    bytes_in: tuple[int, int]
    bytes_out: tuple[int, int]


@dataclass
class Exchange:
    """One generator run: when, which flow keys (the board's view) and the ideal bounds."""

    kind: str
    target: Target
    started: float
    ended: float = 0.0
    first_frame: int = 0  # the capture's frame count when the exchange began
    keys: list[Key] = field(default_factory=list)
    bounds: list[Bound] = field(default_factory=list)
    details: dict[str, object] = field(default_factory=dict)

    def datagrams(self) -> list[Datagram]:
        """What the module counted for this exchange's keys, from its start on."""
        if self.target.capture is None:
            return []
        wanted = set(self.keys)
        return [d for d in self.target.capture() if d.key in wanted and d.frame >= self.first_frame]

    @property
    def from_capture(self) -> bool:
        return self.target.capture is not None

    def settle(self, quiet: float = 0.5, limit: float = 5.0) -> None:
        """Wait until the link has been quiet on this exchange's keys for ``quiet`` seconds (the
        last ACK of a close, a delayed ACK), at most ``limit`` seconds after the exchange ended."""
        deadline = self.ended + limit
        count = -1
        while True:
            seen = len(self.datagrams())
            now = time.time()
            if (seen == count and now - self.ended >= quiet) or now >= deadline:
                return
            count = seen
            time.sleep(min(quiet, max(0.0, deadline - now)))  # re-reading a capture file: no event to wait on

    @property
    def flows(self) -> list[FlowSpec]:
        """The records the module must report for this exchange (exact byte totals over the
        windows it spans); checked against the ideal bounds."""
        if not self.from_capture:
            return [FlowSpec(protocol=b.key[4], local_address=str(b.key[0]), remote_address=str(b.key[1]),
                             local_port=b.key[2], remote_port=b.key[3], min_bytes_in=b.bytes_in[0],
                             min_bytes_out=b.bytes_out[0], label=f"{self.kind} (formula)") for b in self.bounds]
        self.settle()
        totals: dict[Key, list[int]] = {}
        for d in self.datagrams():
            totals.setdefault(d.key, [0, 0])[1 if d.outbound else 0] += d.nbytes
        self._check_bounds(totals)
        flows = [FlowSpec(protocol=k[4], local_address=str(k[0]), remote_address=str(k[1]), local_port=k[2],
                          remote_port=k[3], bytes_in=b[0], bytes_out=b[1], label=self.kind)
                 for k, b in totals.items()]
        if self.target.evidence is not None:
            self.save(self.target.evidence, flows)
        return flows

    def _check_bounds(self, totals: dict[Key, list[int]]) -> None:
        wrong = []
        for bound in self.bounds:
            got = totals.get(bound.key, [0, 0])
            if not (bound.bytes_in[0] <= got[0] <= bound.bytes_in[1]
                    and bound.bytes_out[0] <= got[1] <= bound.bytes_out[1]):
                wrong.append(f"{bound.key}: captured in={got[0]} out={got[1]}, formula in {bound.bytes_in} "
                             f"out {bound.bytes_out}")
        if wrong:
            raise CheckFailed(f"{self.kind}: the capture of the board's link differs from the ideal exchange beyond "
                              "its bounds", actual="; ".join(wrong),
                              fix="look at the capture: lost packets, retransmissions, or a generator fault")

    def save(self, folder: Path, flows: list[FlowSpec] | None = None) -> Path:
        """The exchange and the flows expected of it, as evidence in the run folder."""
        flows = self.flows if flows is None else flows
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"exchange-{self.kind}-{int(self.started * 1000)}.json"
        path.write_text(json.dumps({
            "kind": self.kind, "target": str(self.target.address), "started": self.started, "ended": self.ended,
            "from_capture": self.from_capture, "details": self.details,
            "flows": [{k: (str(v) if v is not None and not isinstance(v, int) else v) for k, v in asdict(f).items()}
                      for f in flows],
        }, indent=2, default=str))
        return path


def key(board: ipaddress.IPv4Address, harness: str, board_port: int, harness_port: int, proto: Protocol) -> Key:
    return (ipaddress.IPv4Address(board), ipaddress.IPv4Address(harness), board_port, harness_port, proto)


def begin(kind: str, target: Target) -> Exchange:
    target.check()
    return Exchange(kind, target, time.time(), first_frame=target.frames() if target.frames else 0)


def finish(exchange: Exchange, keys: Iterable[Key], bounds: Iterable[Bound] = ()) -> Exchange:
    exchange.ended = time.time()
    exchange.keys = list(dict.fromkeys(keys))
    exchange.bounds = list(bounds)
    if exchange.target.evidence is not None and not exchange.from_capture:
        exchange.save(exchange.target.evidence)
    return exchange
