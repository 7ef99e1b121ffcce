"""Traffic at a board, and the flows the security module must report for it.

Generators (one a module), each aimed at a :class:`~harness.traffic.exchange.Target` whose target
policy is required, each returning an :class:`~harness.traffic.exchange.Exchange` whose ``flows``
a test hands to ``board.telemetry.expect_flows``:

- :func:`tcp_session` (TCP echo, FIN or RST), :func:`udp_exchange` (UDP echo), :func:`icmp_echo`;
- :func:`syn_scan`, :func:`udp_scan`, :func:`flow_burst` (past the 64-flow cap);
- :func:`replay` (a capture re-sent onto the board: UDP and ICMP rewritten, TCP re-enacted live).

What the module counts is read from a capture of the board's link (:mod:`.capture`) and reduced
to its collection windows with its flow cap (:mod:`.windows`).
"""

from harness.traffic.checksum import inet_checksum
from harness.traffic.exchange import Exchange, Target
from harness.traffic.icmp import PingResult, icmp_echo, icmp_echo_request, ping
from harness.traffic.replay import replay
from harness.traffic.scan import flow_burst, syn_scan, udp_scan
from harness.traffic.tcp import TcpEcho, tcp_echo, tcp_session
from harness.traffic.udp import udp_exchange

__all__ = [
    "Exchange",
    "PingResult",
    "Target",
    "TcpEcho",
    "flow_burst",
    "icmp_echo",
    "icmp_echo_request",
    "inet_checksum",
    "ping",
    "replay",
    "syn_scan",
    "tcp_echo",
    "tcp_session",
    "udp_exchange",
    "udp_scan",
]
