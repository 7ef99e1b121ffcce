"""Flow matching: sums across windows, order-insensitive pairing, background and extra flows."""

from __future__ import annotations

from ipaddress import ip_address

from harness.telemetry.flowmatch import FlowSpec, default_background, match_flows, sum_windows
from harness.telemetry.model import Flow, Protocol

DEV = "10.77.0.2"


def flow(remote: str, rport: int, proto: Protocol = Protocol.TCP, bin_: int = 0, bout: int = 0,
         lport: int = 40000) -> Flow:
    return Flow(ip_address(DEV), ip_address(remote), lport, rport, proto, bin_, bout)


def test_windows_are_summed_by_key() -> None:
    flows = sum_windows([flow("10.77.0.1", 5000, bin_=10, bout=1), flow("10.77.0.1", 5000, bin_=5, bout=2),
                         flow("10.77.0.1", 5001, bin_=7)])
    assert [(f.remote_port, f.bytes_in, f.bytes_out) for f in flows] == [(5000, 15, 3), (5001, 7, 0)]


def test_exact_and_minimum_bytes_count_over_all_windows() -> None:
    windows = [flow("10.77.0.1", 5000, bin_=600), flow("10.77.0.1", 5000, bin_=400)]
    assert match_flows([FlowSpec(Protocol.TCP, remote_port=5000, bytes_in=1000)], windows).ok
    assert match_flows([FlowSpec(Protocol.TCP, remote_port=5000, min_bytes_in=1000)], windows).ok
    assert not match_flows([FlowSpec(Protocol.TCP, remote_port=5000, bytes_in=600)], windows).ok
    assert not match_flows([FlowSpec(Protocol.TCP, remote_port=5000, min_bytes_in=1001)], windows).ok


def test_order_insensitive_and_a_loose_spec_does_not_steal_the_strict_ones_flow() -> None:
    reported = [flow("10.77.0.1", 5000, bout=100), flow("10.77.0.1", 7, Protocol.UDP, bout=64)]
    loose = FlowSpec(remote_address="10.77.0.1", label="anything to the host")
    strict = FlowSpec(Protocol.TCP, remote_port=5000, min_bytes_out=50, label="tcp")
    for specs in ([loose, strict], [strict, loose]):
        m = match_flows(specs, reported)
        assert m.ok and not m.extra
        assert dict((s.label, f.remote_port) for s, f in m.matched) == {"tcp": 5000, "anything to the host": 7}


def test_each_flow_serves_one_spec_only() -> None:
    m = match_flows([FlowSpec(Protocol.TCP), FlowSpec(Protocol.TCP)], [flow("10.77.0.1", 5000)])
    assert not m.ok and len(m.missing) == 1 and "missing" in m.describe()


def test_background_and_extra_are_separated_and_reported() -> None:
    reported = [flow("10.77.0.1", 1883, bout=300), flow("10.77.0.1", 123, Protocol.UDP, bout=48),
                flow("10.77.0.1", 5000, bout=10), flow("10.77.0.9", 80, bout=10)]
    m = match_flows([FlowSpec(Protocol.TCP, remote_port=5000)], reported, default_background())
    assert m.ok
    assert [f.remote_port for f in m.background] == [1883, 123]
    assert [f.remote_port for f in m.extra] == [80]
    text = m.describe()
    assert "extra:   TCP 10.77.0.2:40000->10.77.0.9:80" in text and "background" in text


def test_a_spec_may_name_background_traffic_itself() -> None:
    m = match_flows([FlowSpec(Protocol.TCP, remote_port=1883, min_bytes_out=1)],
                    [flow("10.77.0.1", 1883, bout=300)], default_background())
    assert m.ok and not m.background


def test_describe_spec() -> None:
    spec = FlowSpec(Protocol.UDP, remote_address="10.77.0.1", remote_port=7, bytes_out=64, min_bytes_in=1,
                    label="echo")
    assert spec.describe() == "echo: UDP *:*->10.77.0.1:7 [in>=1 out=64]"
