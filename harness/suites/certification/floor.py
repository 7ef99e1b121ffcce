"""The floor a device's own intervals put under the certification suite's wall time: the sum of
the waits no implementation of the suite could avoid, whatever it overlaps. ``benchmarks/
certify_speed.py`` compares the suite's wall time with it (target: under 1.25 times the floor).

What counts, from the build's declared behaviour (spec section in brackets):

- the first collection after connecting, then one more low-priority collection to measure the
  low interval on; the traffic clauses' windows fit inside it where they are shorter: each of
  TCP, UDP and ICMP needs a window of its own (a clause judges its window exactly, so two
  clauses' flows cannot share one) and the flow cap one more window (3.1, 3.2);
- the broker closing the connection: an outage spanning two collections (the module keeps only
  the last: two are needed to see it), the 3 s PENDING check after reconnecting, a collection (3.3);
- a frozen broker: two windows sent into the frozen connection, then one after the thaw (3.3);
- a cut cable: NetX notices after about 10 s of unacknowledged sending, the PENDING check, a
  collection (3.3);
- suspension: the pending time, the PENDING check and a collection to suspend; once back the
  PENDING check, then the next low-priority collection, which the known-defect check judges (3.3,
  3.4).

Bring-up (flashing, booting, DHCP) and the harness's own work are not in the floor: the ratio
shows them as overhead.
"""

from __future__ import annotations

from harness.firmware import Behaviour

PENDING_CHECK_S = 3  # the module checks a PENDING connection every 3 s (spec 3.3)
NETX_NOTICES_S = 10  # NetX Duo gives up on unacknowledged TCP data after about 10 s (spec 3.3)
TRAFFIC_WINDOWS = 4  # TCP, UDP, ICMP, and past the flow cap


def floor_parts(behaviour: Behaviour) -> list[tuple[str, float]]:
    """(what, seconds) for each wait the device's intervals impose, in suite order."""
    high, low = behaviour.intervals_s.high, behaviour.intervals_s.low
    first = behaviour.first_collection_window[0]
    return [
        ("first collection, the low interval once; traffic windows inside it",
         max(first + low, first + TRAFFIC_WINDOWS * high)),
        ("3.3.closed: outage over two collections, PENDING check, a collection", 2 * high + PENDING_CHECK_S + high),
        ("3.3.frozen: two windows into the frozen connection, one after", 3 * high),
        ("3.3.link-cut: NetX notices, PENDING check, a collection", NETX_NOTICES_S + PENDING_CHECK_S + high),
        ("3.3.suspended: pending time, suspension, PENDING check, a low collection",
         behaviour.pending_time_s + PENDING_CHECK_S + high + PENDING_CHECK_S + low),
    ]


def floor_s(behaviour: Behaviour) -> float:
    return float(sum(seconds for _, seconds in floor_parts(behaviour)))
