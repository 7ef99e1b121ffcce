"""dnsmasq and chronyd configuration, the lease file, and the DNS/SNTP clients (loopback fakes)."""

from __future__ import annotations

import ipaddress
import socket
import struct
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from harness.emulation.services import Chrony, Dnsmasq, dns_query, read_leases, sntp_query
from harness.errors import WaitTimeout

A = ipaddress.IPv4Address


def _dnsmasq(tmp_path: Path) -> Dnsmasq:
    return Dnsmasq(tmp_path, "hil-abc123-svc", "eth0", ipaddress.IPv4Interface("10.231.1.2/24"),
                   (A("10.231.1.200"), A("10.231.1.250")), {"broker": A("10.231.1.1")},
                   router=A("10.231.1.1"), ntp=A("10.231.1.2"))


def test_dnsmasq_runs_in_the_namespace_bound_to_its_interface_only(tmp_path: Path) -> None:
    argv = _dnsmasq(tmp_path).argv()
    assert argv[:4] == ["ip", "netns", "exec", "hil-abc123-svc"]
    for option in ("--keep-in-foreground", "--conf-file=/dev/null", "--no-resolv", "--no-hosts",
                   "--bind-interfaces", "--interface=eth0", "--host-record=broker.hil.test,10.231.1.1",
                   "--dhcp-option=option:ntp-server,10.231.1.2", f"--dhcp-leasefile={tmp_path}/dnsmasq.leases",
                   "--dhcp-range=10.231.1.200,10.231.1.250,255.255.255.0,1h"):
        assert option in argv


def test_fixed_leases_and_names_are_written_for_each_board(tmp_path: Path) -> None:
    dnsmasq = _dnsmasq(tmp_path)
    dnsmasq.add_host("02:aa:bb:cc:dd:ee", A("10.231.1.101"), "b1")
    assert dnsmasq.hosts_file.read_text() == "02:aa:bb:cc:dd:ee,10.231.1.101,b1\n"
    assert dnsmasq.names_file.read_text() == "10.231.1.101 b1.hil.test b1\n"


def test_chrony_serves_the_test_subnet_on_one_address_without_a_command_port(tmp_path: Path) -> None:
    conf = Chrony(tmp_path, "ns", ipaddress.IPv4Interface("10.231.1.2/24")).config().splitlines()
    for line in ("local stratum 8", "allow 10.231.1.0/24", "bindaddress 10.231.1.2", "cmdport 0"):
        assert line in conf


def test_lease_file_is_parsed_and_bad_lines_skipped(tmp_path: Path) -> None:
    path = tmp_path / "leases"
    path.write_text("1795890000 02:AA:bb:cc:dd:ee 10.231.1.224 probe 01:02\n"
                    "garbage\n1795890000 02:11:22:33:44:55 not-an-ip * *\n")
    (lease,) = read_leases(path)
    assert (lease.mac, lease.address, lease.hostname) == ("02:aa:bb:cc:dd:ee", A("10.231.1.224"), "probe")
    assert read_leases(tmp_path / "missing") == []


def _udp_server(handler: Callable[[bytes], bytes | None]) -> Iterator[int]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(5)

    def serve() -> None:
        try:
            data, peer = sock.recvfrom(512)
        except OSError:
            return
        reply = handler(data)
        if reply is not None:
            sock.sendto(reply, peer)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield sock.getsockname()[1]
    sock.close()
    thread.join(5)


def _dns_answer(query: bytes) -> bytes:
    qid = query[:2]
    question = query[12:]
    answer = b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 60, 4) + bytes([10, 231, 1, 1])
    return qid + struct.pack("!HHHHH", 0x8180, 1, 1, 0, 0) + question + answer


@pytest.fixture
def dns_server() -> Iterator[int]:
    yield from _udp_server(_dns_answer)


@pytest.fixture
def ntp_server() -> Iterator[int]:
    def reply(query: bytes) -> bytes:
        assert query[0] == 0x23  # version 4, client mode
        return bytes([0x24, 8]) + b"\0" * 38 + struct.pack("!II", 2208988800 + 1_700_000_000, 1 << 31)

    yield from _udp_server(reply)


@pytest.fixture
def silent_server() -> Iterator[int]:
    yield from _udp_server(lambda _q: None)


def test_dns_query_reads_the_a_record(dns_server: int) -> None:
    assert dns_query("broker.hil.test", A("127.0.0.1"), timeout=2, port=dns_server) == A("10.231.1.1")


def test_sntp_query_reads_stratum_and_time(ntp_server: int) -> None:
    answer = sntp_query(A("127.0.0.1"), timeout=2, port=ntp_server)
    assert answer.stratum == 8
    assert answer.time.timestamp() == pytest.approx(1_700_000_000.5)


def test_a_silent_server_times_out_naming_what_was_awaited(silent_server: int) -> None:
    with pytest.raises(WaitTimeout, match=r"NTP answer from 127\.0\.0\.1"):
        sntp_query(A("127.0.0.1"), timeout=0.3, port=silent_server)
