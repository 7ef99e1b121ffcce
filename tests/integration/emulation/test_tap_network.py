"""The tap test network: boards in namespaces of their own, reached by their own addresses."""

from __future__ import annotations

import ipaddress
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from harness.emulation import netns
from harness.emulation.machine_registry import list_machines
from harness.emulation.network import mac_for
from harness.emulation.process import pid_alive
from harness.emulation.qemu import Machine
from harness.emulation.services import dns_query, read_leases, sntp_query
from harness.emulation.tap_network import TapNetwork, networks_dir
from harness.state import StateDir

pytestmark = [pytest.mark.needs("root", "ip", "qemu", "arm-gcc", "dnsmasq", "chrony")]

HERE = Path(__file__).resolve().parent
HELLO_PORT = 9999


@pytest.fixture
def net(run_dir: Path) -> Iterator[TapNetwork]:
    network = TapNetwork(run_dir).start()
    pids = [p.proc.pid for p in (network.dnsmasq, network.chrony) if p is not None and p.proc]
    try:
        yield network
    finally:
        namespaces = [network.services_ns, *(a.namespace for a in network.attachments.values())]
        network.stop()
        assert not any(pid_alive(pid) for pid in pids), "dnsmasq or chronyd still running"
        assert not set(namespaces) & set(netns.list_namespaces()), "namespaces left behind"
        assert not netns.list_links(network.bridge), "links left behind"


def _board(net: TapNetwork, machines: Callable[..., Machine], build_image: Callable[..., bytes],
           name: str, variant: str = "A") -> tuple[Machine, Any]:
    att = net.attach(name)
    machine = machines(name, att)
    machine.program_flash(0, build_image(board=name, board_ip=str(att.address),
                                         harness_ip=str(net.harness_address), variant=variant))
    return machine, att


def _wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.1)  # re-probing the network


@pytest.mark.timeout(120)
def test_two_boards_reach_the_harness_side_by_their_own_addresses(
        net: TapNetwork, machines: Callable[..., Machine], build_image: Callable[..., bytes],
        open_console: Callable[[str], Any], ping: Callable[..., bool], state: StateDir) -> None:
    listener = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    listener.bind((str(net.harness_address), HELLO_PORT))
    listener.settimeout(10)
    boards = [_board(net, machines, build_image, name) for name in ("b1", "b2")]
    with ThreadPoolExecutor(2) as pool:  # power both on at the same time: no shared ports or sockets
        list(pool.map(lambda m: m.start(run=True), [m for m, _ in boards]))

    hellos = {}
    while len(hellos) < 2:
        data, (source, _) = listener.recvfrom(256)
        hellos[source] = data.decode()
    listener.close()
    assert hellos == {str(att.address): f"hello {m.name} A" for m, att in boards}
    for machine, att in boards:
        open_console(machine.console_url).expect(rf"board={machine.name} ip={att.address} ")
        assert ping(att.address), f"{att.address} does not answer ping from the harness side"
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind((str(net.harness_address), 0))
            sock.settimeout(5)
            sock.sendto(f"to {machine.name}".encode(), (str(att.address), 7))
            assert sock.recvfrom(100) == (f"to {machine.name}".encode(), (str(att.address), 7))
    assert {r.name: r.network["address"] for r in list_machines(state)} == {
        m.name: str(att.address) for m, att in boards}
    assert dns_query("b2.hil.test", net.services_address) == boards[1][1].address


@pytest.mark.timeout(120)
def test_dhcp_dns_and_ntp_answer_a_client_in_a_board_namespace(net: TapNetwork) -> None:
    att = net.attach("b1")
    probe_mac = mac_for("b1-probe")
    done = subprocess.run([*netns.netns_exec(att.namespace), sys.executable, str(HERE / "probe_client.py"),
                           "--mac", probe_mac], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    got = json.loads(done.stdout)
    print("probe client in", att.namespace, "got", got)

    assert ipaddress.IPv4Address(got["address"]) in net.subnet  # type: ignore[operator]
    assert net.wait_for_lease(probe_mac, timeout=5) == ipaddress.IPv4Address(got["address"])
    assert got["dns_server"] == got["ntp_server"] == str(net.services_address)
    assert got["router"] == str(net.harness_address)
    assert got["broker"] == str(net.harness_address)
    assert got["time_host"] == str(net.services_address)
    assert got["ntp_stratum"] == 8
    assert abs((datetime.fromisoformat(got["ntp_time"]) - datetime.now(UTC)).total_seconds()) < 5
    # chronyd answers on the test network only, and from the harness side too
    assert sntp_query(net.services_address).stratum == 8
    assert [lease.mac for lease in read_leases(net.dnsmasq.lease_file)] == [probe_mac]  # type: ignore[union-attr]


@pytest.mark.timeout(120)
def test_freeze_and_link_down_are_visible_from_the_harness_side(
        net: TapNetwork, machines: Callable[..., Machine], build_image: Callable[..., bytes],
        ping: Callable[..., bool]) -> None:
    machine, att = _board(net, machines, build_image, "b1")
    machine.start(run=True)
    _wait_until(lambda: ping(att.address), 10, f"{att.address} to answer ping")

    machine.freeze()
    assert not ping(att.address), "a frozen board answered ping"
    machine.thaw()
    _wait_until(lambda: ping(att.address), 10, "the thawed board to answer ping")

    machine.link_down()
    assert not ping(att.address), "a board with its cable pulled answered ping"
    machine.link_up()
    _wait_until(lambda: ping(att.address), 10, "the board to answer ping with its link up")

    machine.power_cycle()  # the tap in the board's namespace outlives the QEMU process
    _wait_until(lambda: ping(att.address), 10, "the power-cycled board to answer ping")
    assert len(machine.pcaps) == 2
    assert all(p.stat().st_size > 24 for p in machine.pcaps)  # each pcap holds more than its header


_KILLED_OWNER = """
import json, pathlib, sys, threading
from harness.emulation.tap_network import TapNetwork
net = TapNetwork(pathlib.Path(sys.argv[1])).start()
net.attach("k1")
print(json.dumps({"token": net.token, "pids": [net.dnsmasq.proc.pid, net.chrony.proc.pid],
                  "namespaces": [net.services_ns, net.attachments["k1"].namespace]}), flush=True)
threading.Event().wait(60)
"""


@pytest.mark.timeout(120)
def test_a_dead_owners_network_is_removed_by_the_next_start(run_dir: Path) -> None:
    owner = subprocess.Popen([sys.executable, "-c", _KILLED_OWNER, str(run_dir / "dead")],
                             stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert owner.stdout is not None
        left = json.loads(owner.stdout.readline())
    finally:
        os.killpg(owner.pid, signal.SIGKILL)  # no cleanup runs in the owner
        owner.wait(10)
    assert set(left["namespaces"]) <= set(netns.list_namespaces())
    assert all(pid_alive(pid) for pid in left["pids"])  # dnsmasq and chronyd outlived their owner

    with TapNetwork(run_dir / "next"):
        assert not set(left["namespaces"]) & set(netns.list_namespaces())
        assert not netns.list_links(f"{netns.PREFIX}{left['token']}")
        _wait_until(lambda: not any(pid_alive(pid) for pid in left["pids"]), 5,
                    "the dead owner's dnsmasq and chronyd to be gone")


_SCENARIO = """
import json, pathlib, sys, threading
from harness.emulation.qemu import Machine
from harness.emulation.tap_network import TapNetwork
from harness.state import resolve_state_dir
run, state, image = pathlib.Path(sys.argv[1]), resolve_state_dir(sys.argv[2]), pathlib.Path(sys.argv[3])
with TapNetwork(run) as net:
    machines = []
    try:
        for name in ("s1", "s2"):
            m = Machine(name, flash_file=run / f"{name}.flash", run_dir=run, network=net.attach(name),
                        state=state)
            m.program_flash(0, image.read_bytes())
            machines.append(m.start(run=True))
        print(json.dumps({"pids": [m.pid for m in machines] + [net.dnsmasq.proc.pid, net.chrony.proc.pid],
                          "token": net.token,
                          "namespaces": [net.services_ns] + [a.namespace for a in net.attachments.values()]}),
              flush=True)
        threading.Event().wait(60)
    finally:
        for m in machines:
            m.stop()
"""


@pytest.mark.timeout(120)
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_stops_machines_services_and_namespaces(
        run_dir: Path, state: StateDir, build_image: Callable[..., bytes], sig: signal.Signals) -> None:
    image = run_dir / "image.bin"
    image.write_bytes(build_image(board="s", board_ip="10.231.0.100", harness_ip="10.231.0.1"))
    proc = subprocess.Popen([sys.executable, "-c", _SCENARIO, str(run_dir), str(state.root), str(image)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line, proc.stderr.read() if proc.stderr else "scenario printed nothing"
        started = json.loads(line)
        assert all(pid_alive(pid) for pid in started["pids"])
        assert set(started["namespaces"]) <= set(netns.list_namespaces())
        os.kill(proc.pid, sig)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
    left = [pid for pid in started["pids"] if pid_alive(pid)]
    assert not left, f"processes left running after {sig.name}: {left}"
    assert not set(started["namespaces"]) & set(netns.list_namespaces())
    assert not netns.list_links(f"{netns.PREFIX}{started['token']}")
    assert not (networks_dir() / f"{started['token']}.json").exists()
    assert list_machines(state) == []


@pytest.mark.timeout(120)
def test_a_relative_run_folder_still_gives_the_board_its_fixed_lease(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """dnsmasq runs in another working folder: a relative run folder handed to it as is would
    leave it without its hosts file, and the board with a pool address."""
    monkeypatch.chdir(tmp_path)
    with TapNetwork(Path("relative-run")) as network:
        att = network.attach("b1")
        done = subprocess.run([*netns.netns_exec(att.namespace), sys.executable, str(HERE / "probe_client.py"),
                               "--mac", att.mac], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        assert ipaddress.IPv4Address(json.loads(done.stdout)["address"]) == att.address


@pytest.mark.timeout(60)
def test_the_names_images_were_built_for_answer_with_the_networks_services(run_dir: Path) -> None:
    """A stock image resolves the hub and DPS names it was built for, and its time server's: the
    test network's DNS answers them with the harness (broker) and the services' address (time),
    and still knows nothing else outside hil.test."""
    aliases = {"hil-lab.azure-devices.net": "broker", "hil-lab-dps.azure-devices-provisioning.net": "broker",
               "0.pool.ntp.org": "time"}
    with TapNetwork(run_dir, aliases) as net:
        dns = net.services_address
        assert dns_query("hil-lab.azure-devices.net", dns) == net.harness_address
        assert dns_query("hil-lab-dps.azure-devices-provisioning.net", dns) == net.harness_address
        assert dns_query("0.pool.ntp.org", dns) == net.services_address
        assert dns_query("broker.hil.test", dns) == net.harness_address
        assert dns_query("other-hub.azure-devices.net", dns) is None  # nothing else is made up


def test_aliases_point_only_at_the_networks_services(run_dir: Path) -> None:
    from harness.errors import UsageError

    with pytest.raises(UsageError, match="broker or time"):
        TapNetwork(run_dir, {"hil-lab.azure-devices.net": "somewhere"})
