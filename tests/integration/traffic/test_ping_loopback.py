from __future__ import annotations

import pytest

from harness.netpolicy import TargetPolicy
from harness.traffic import ping


@pytest.mark.needs("root")
@pytest.mark.timeout(30)
def test_ping_loopback_counts_what_the_module_would() -> None:
    result = ping("127.0.0.1", 3, size=24, timeout=2, policy=TargetPolicy())
    assert (result.sent, result.replies) == (3, 3)
    assert result.request_bytes == result.reply_bytes == 3 * (8 + 24)  # ICMP header + data, per packet
    assert len(result.rtts) == 3 and all(0 <= r < 2 for r in result.rtts)


@pytest.mark.needs("root")
@pytest.mark.timeout(30)
def test_no_wait_sends_without_counting_replies() -> None:
    result = ping("127.0.0.1", 5, size=0, wait=False, policy=TargetPolicy())
    assert (result.sent, result.replies, result.request_bytes) == (5, 0, 5 * 8)
