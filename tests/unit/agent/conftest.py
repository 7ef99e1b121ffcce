"""Host builds of the reference firmware's security agent, driven through ctypes.

The agent's C sources and -D flags come from ``fixtures/firmware/agent/agent.mk`` (so the make
knobs are exercised too), linked with ``host_platform.c`` (a recording ``platform_*``) into a shared
library compiled once per knob set. Each test gets its own copy of the library loaded, so the
agent's static state starts fresh.
"""

from __future__ import annotations

import ctypes
import hashlib
import shlex
import shutil
import struct
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from ipaddress import IPv4Address
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
FIRMWARE = REPO / "fixtures" / "firmware"
HOST_PLATFORM = Path(__file__).with_name("host_platform.c")
VECTORS = REPO / "fixtures" / "vectors"

PROTO_NUMBERS = {"icmp": 1, "tcp": 6, "udp": 17}
TRANSPORT_HEADER = {"icmp": 8, "tcp": 20, "udp": 8}


def agent_make_flags(knobs: dict[str, str]) -> tuple[list[str], list[str]]:
    """AGENT_SRCS and AGENT_CFLAGS as agent.mk computes them for these knobs."""
    probe = "_hil_print_agent: ; $(info SRCS=$(AGENT_SRCS))$(info CFLAGS=$(AGENT_CFLAGS))"
    cmd = [
        "make",
        "-s",
        "--no-print-directory",
        "-C",
        str(FIRMWARE),
        "-f",
        "agent/agent.mk",
        "--eval",
        probe,
        "_hil_print_agent",
        *(f"{k}={v}" for k, v in knobs.items()),
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"agent.mk rejected {knobs}: {out.stderr.strip()}")
    lines = dict(line.split("=", 1) for line in out.stdout.splitlines() if "=" in line)
    return lines["SRCS"].split(), shlex.split(lines["CFLAGS"])


def compile_agent(out_dir: Path, knobs: dict[str, str], extra_cflags: tuple[str, ...] = ()) -> Path:
    srcs, cflags = agent_make_flags(knobs)
    key = hashlib.sha256(repr((sorted(knobs.items()), extra_cflags)).encode()).hexdigest()[:12]
    lib = out_dir / f"libagent-{key}.so"
    cmd = [
        "gcc",
        "-shared",
        "-fPIC",
        "-std=c11",
        "-O1",
        "-g",
        "-Wall",
        "-Wextra",
        "-Werror",
        "-Wno-unused-parameter",
        "-Iinclude",
        *cflags,
        *extra_cflags,
        *srcs,
        str(HOST_PLATFORM),
        "-o",
        str(lib),
    ]
    out = subprocess.run(cmd, cwd=FIRMWARE, capture_output=True, text=True, timeout=120, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"host build of the agent failed ({' '.join(cmd)}):\n{out.stderr}")
    return lib


@dataclass(frozen=True)
class Publish:
    time: int
    topic: str
    payload: bytes
    rc: int


def ipv4_packet(
    src: str,
    dst: str,
    proto: str,
    *,
    sport: int = 0,
    dport: int = 0,
    payload: int = 0,
    options: int = 0,
    icmp_type: int = 8,
    total: int | None = None,
) -> bytes:
    """An IPv4 datagram: header (+ `options` words of options), transport header, `payload` bytes;
    `total` overrides the header's total length (a reassembled datagram keeps its first fragment's)."""
    ihl = 5 + options
    length = ihl * 4 + TRANSPORT_HEADER[proto] + payload
    header = struct.pack(
        "!BBHHHBBH4s4s",
        0x40 | ihl,
        0,
        length if total is None else total,
        0,
        0,
        64,
        PROTO_NUMBERS[proto],
        0,
        IPv4Address(src).packed,
        IPv4Address(dst).packed,
    ) + b"\x01" * (4 * options)
    if proto == "icmp":
        transport = struct.pack("!BBHHH", icmp_type, 0, 0, 1, 1)
    elif proto == "udp":
        transport = struct.pack("!HHHH", sport, dport, 8 + payload, 0)
    else:
        transport = struct.pack("!HHIIBBHHH", sport, dport, 0, 0, 0x50, 0x18, 1024, 0, 0)
    return header + transport + b"\xaa" * payload


class HostAgent:
    """One loaded instance of the host-built agent."""

    def __init__(self, lib_path: Path) -> None:
        lib = ctypes.CDLL(str(lib_path))
        self.lib = lib
        lib.host_publish_topic.restype = ctypes.c_char_p
        lib.host_log_line.restype = ctypes.c_char_p
        lib.host_publish_payload.restype = ctypes.POINTER(ctypes.c_uint8)
        lib.host_publish_payload.argtypes = [ctypes.c_uint, ctypes.POINTER(ctypes.c_uint32)]
        lib.host_publish_time.restype = ctypes.c_uint32
        lib.host_push_random.argtypes = [ctypes.c_uint32]
        lib.host_tick.argtypes = [ctypes.c_uint32]
        lib.agent_on_ipv4_packet.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint16]
        lib.asc_ser_buffer.restype = ctypes.POINTER(ctypes.c_uint8)
        lib.asc_ser_buffer.argtypes = [ctypes.POINTER(ctypes.c_uint32)]
        lib.asc_ser_begin.argtypes = [ctypes.c_char_p, ctypes.c_uint32]
        lib.asc_ser_network_activity_begin.argtypes = [ctypes.c_char_p, ctypes.c_uint32, ctypes.c_uint32]
        lib.asc_ser_flow_v4.argtypes = [
            ctypes.c_char_p,
            ctypes.c_char_p,
            ctypes.c_uint16,
            ctypes.c_uint16,
            ctypes.c_uint32,
            ctypes.c_uint32,
            ctypes.c_uint8,
        ]
        lib.asc_ser_system_information.argtypes = [ctypes.c_char_p, ctypes.c_uint32, ctypes.c_uint32, ctypes.c_char_p]
        lib.asc_ser_heartbeat.argtypes = [ctypes.c_char_p, ctypes.c_uint32, ctypes.c_uint32]
        self.now = 0

    # ---- platform side
    def set_connected(self, on: bool) -> None:
        self.lib.host_set_connected(int(on))

    def set_publish_rc(self, rc: int) -> None:
        self.lib.host_set_publish_rc(rc)

    def set_device_id(self, device_id: str) -> None:
        self.lib.host_set_device_id(device_id.encode())

    def push_random(self, *values: int) -> None:
        """The next platform_rand() results (32 bits each), in order."""
        for v in values:
            assert self.lib.host_push_random(v) == 0

    @property
    def random_calls(self) -> int:
        return int(self.lib.host_random_calls())

    # ---- agent side
    def init(self) -> None:
        self.lib.agent_init()

    def tick(self, unix_time: int) -> None:
        self.now = unix_time
        self.lib.host_tick(unix_time)

    def run_until(self, unix_time: int, *, each: Callable[[int], None] | None = None) -> None:
        """Tick every second after the last tick up to `unix_time`, calling `each(t)` first."""
        if self.now == 0:
            raise AssertionError("run_until() needs a first tick(t) to start from")
        for t in range(self.now + 1, unix_time + 1):
            if each is not None:
                each(t)
            self.tick(t)

    def packet(self, outbound: bool, data: bytes) -> None:
        self.lib.agent_on_ipv4_packet(int(outbound), data, len(data))

    @property
    def state(self) -> int:
        return int(self.lib.asc_security_module_state())

    @property
    def pool_free(self) -> int:
        return int(self.lib.asc_flows_pool_free())

    @property
    def publishes(self) -> list[Publish]:
        out = []
        for i in range(self.lib.host_publish_count()):
            n = ctypes.c_uint32()
            ptr = self.lib.host_publish_payload(i, ctypes.byref(n))
            out.append(
                Publish(
                    int(self.lib.host_publish_time(i)),
                    self.lib.host_publish_topic(i).decode(),
                    ctypes.string_at(ptr, n.value),
                    int(self.lib.host_publish_rc(i)),
                )
            )
        return out

    @property
    def logs(self) -> list[str]:
        return [self.lib.host_log_line(i).decode() for i in range(self.lib.host_log_count())]

    # ---- the serializer alone
    def ser_buffer(self) -> bytes | None:
        n = ctypes.c_uint32()
        ptr = self.lib.asc_ser_buffer(ctypes.byref(n))
        return ctypes.string_at(ptr, n.value) if ptr else None


# the default knob set of the tests (make variables of agent.mk)
FAST = {"PRESET": "fast"}  # first collection 1 s, intervals 2 s / 6 s, pending time 20 s


@pytest.fixture(scope="session")
def agent_libs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., Path]]:
    out_dir = tmp_path_factory.mktemp("agent-host")
    cache: dict[tuple[tuple[tuple[str, str], ...], tuple[str, ...]], Path] = {}

    def build(knobs: dict[str, str], extra_cflags: tuple[str, ...] = ()) -> Path:
        key = (tuple(sorted(knobs.items())), extra_cflags)
        if key not in cache:
            cache[key] = compile_agent(out_dir, knobs, extra_cflags)
        return cache[key]

    yield build


@pytest.fixture
def make_agent(agent_libs: Callable[..., Path], tmp_path: Path) -> Callable[..., HostAgent]:
    """Load a fresh instance of the agent built with `knobs` (a private copy of the library)."""
    count = 0

    def make(knobs: dict[str, str] | None = None, extra_cflags: tuple[str, ...] = ()) -> HostAgent:
        nonlocal count
        count += 1
        lib = agent_libs(knobs if knobs is not None else FAST, extra_cflags)
        private = tmp_path / f"{lib.stem}-{count}.so"
        shutil.copyfile(lib, private)
        return HostAgent(private)

    return make


@pytest.fixture
def packet() -> Callable[..., bytes]:
    return ipv4_packet


@pytest.fixture
def agent_mk() -> Callable[[dict[str, str]], tuple[list[str], list[str]]]:
    """agent.mk's AGENT_SRCS and AGENT_CFLAGS for a knob set (RuntimeError when make refuses)."""
    return agent_make_flags
