"""A small client for the GDB remote serial protocol (what QEMU's gdbstub speaks).

Used to load the flash file into a machine at power-on and by the probe plugin's QEMU bridge::

    with GdbRemote.connect("unix:/run/m.gdb", timeout=5.0) as gdb:
        gdb.halt()
        gdb.write_memory(0x0, image)
        gdb.monitor("system_reset")
        gdb.cont()

Every call has a deadline (the ``timeout`` given to :meth:`GdbRemote.connect`, or the call's own
``timeout``) and raises :class:`GdbTimeout` naming the packet it waited for; a closed or broken
socket raises :class:`GdbConnectionError`. Memory moves in blocks chunked to the stub's
``PacketSize``; registers use the numbering of the stub's target description (QEMU's arm-m:
r0–r15 are 0–15, xpsr is 25), available as :attr:`GdbRemote.registers`.
"""

from __future__ import annotations

import contextlib
import logging
import re
import select
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass
from types import TracebackType

from harness.errors import InfrastructureError

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 5.0
_INTERRUPT = b"\x03"
_ESCAPED = frozenset(b"#$}*")
_XML_ELEMENT = re.compile(r"<(?P<tag>xi:include|reg)\b(?P<attrs>[^>]*)>")
_XML_ATTR = re.compile(r'([\w:-]+)="([^"]*)"')


class GdbRemoteError(InfrastructureError):
    """The gdbstub answered with an error or the link to it failed."""


class GdbConnectionError(GdbRemoteError):
    """The socket to the gdbstub is closed, refused or broken."""


class GdbTimeout(GdbRemoteError, TimeoutError):
    """The gdbstub did not answer before the deadline."""


@dataclass(frozen=True)
class Register:
    """One register of the target description."""

    name: str
    number: int
    bitsize: int
    offset: int | None  # byte offset in the 'g' packet, None when not part of it


@dataclass(frozen=True)
class StopReply:
    """A parsed stop reply (``S05``, ``T05thread:01;``, ``W00``...)."""

    kind: str  # "S"/"T" (stopped on a signal), "W" (exited), "X" (killed)
    signal: int
    raw: str


def checksum(payload: bytes) -> int:
    return sum(payload) & 0xFF


def frame(payload: bytes) -> bytes:
    """``$payload#cs`` with the protocol's escaping of ``# $ } *``."""
    out = bytearray()
    for byte in payload:
        if byte in _ESCAPED:
            out += bytes((0x7D, byte ^ 0x20))
        else:
            out.append(byte)
    return b"$" + bytes(out) + b"#" + f"{checksum(bytes(out)):02x}".encode()


def unescape(body: bytes) -> bytes:
    """Undo escaping and run-length encoding of a received packet body."""
    out = bytearray()
    i = 0
    while i < len(body):
        byte = body[i]
        if byte == 0x7D and i + 1 < len(body):
            out.append(body[i + 1] ^ 0x20)
            i += 2
        elif byte == 0x2A and out and i + 1 < len(body):  # '*': repeat previous char
            out += bytes((out[-1],)) * (body[i + 1] - 29)
            i += 2
        else:
            out.append(byte)
            i += 1
    return bytes(out)


def parse_address(address: str) -> tuple[int, str | tuple[str, int]]:
    """``unix:/path`` or ``tcp:HOST:PORT`` → (socket family, socket address)."""
    if address.startswith("unix:"):
        return socket.AF_UNIX, address[len("unix:"):]
    if address.startswith("tcp:"):
        host, sep, port = address[len("tcp:"):].rpartition(":")
        if sep and port.isdigit():
            return socket.AF_INET, (host.strip("[]") or "127.0.0.1", int(port))
    raise GdbRemoteError(f"bad gdbstub address {address!r}",
                         expected="'unix:/path' or 'tcp:HOST:PORT'", actual=address)


def connect_retrying(address: str, timeout: float, interval: float = 0.05) -> tuple[socket.socket, int]:
    """(connected blocking socket, its family) for ``unix:``/``tcp:`` ``address``, retrying every
    ``interval`` s while the listener is not there yet (QEMU makes its sockets after parsing its
    options); after ``timeout`` the last OSError is raised."""
    family, sockaddr = parse_address(address)
    deadline = time.monotonic() + timeout
    while True:
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.settimeout(max(0.05, deadline - time.monotonic()))
        try:
            sock.connect(sockaddr)
            return sock, family
        except OSError:
            sock.close()
            if time.monotonic() >= deadline:
                raise
            time.sleep(interval)


def parse_stop_reply(text: str) -> StopReply | None:
    if text[:1] in ("S", "T", "W", "X") and re.fullmatch(r"[0-9a-fA-F]{2}", text[1:3] or ""):
        return StopReply(text[0], int(text[1:3], 16), text)
    return None


class GdbRemote:
    """One connection to a gdbstub; thread-safe (one request at a time)."""

    def __init__(self, sock: socket.socket, address: str, timeout: float) -> None:
        self._sock = sock
        self.address = address
        self.timeout = timeout
        self._buf = bytearray()
        self._packets: deque[bytes] = deque()
        self._acks = self._naks = 0
        self._lock = threading.RLock()
        self._ack = True
        self._closed = False
        self.packet_size = 4096
        self.features: dict[str, str] = {}
        self.registers: dict[str, Register] = {}
        self._running = False
        self.last_stop: StopReply | None = None
        self.console_output = bytearray()  # 'O' packets from the stub (monitor replies)

    # ---------------------------------------------------------------- connection

    @classmethod
    def connect(cls, address: str, timeout: float = DEFAULT_TIMEOUT) -> GdbRemote:
        """Connect, negotiate features (PacketSize, no-ack mode) and learn the halt state."""
        try:
            sock, family = connect_retrying(address, timeout)  # the stub may still be starting
        except OSError as exc:
            raise GdbConnectionError(
                f"cannot connect to gdbstub at {address}: {exc}",
                expected="a listening gdbstub (qemu -gdb ...)", actual=str(exc),
                fix="check that the machine is running and its 'gdb' address") from exc
        if family == socket.AF_INET:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setblocking(False)
        remote = cls(sock, address, timeout)
        try:
            remote._handshake()
        except BaseException:
            remote.close()
            raise
        return remote

    def _handshake(self) -> None:
        reply = self.request(b"qSupported:multiprocess-;swbreak+;hwbreak+;xmlRegisters=arm")
        for item in reply.split(";"):
            if "=" in item:
                key, value = item.split("=", 1)
                self.features[key] = value
            elif item:
                self.features[item[:-1]] = item[-1]
        if "PacketSize" in self.features:
            self.packet_size = int(self.features["PacketSize"], 16)
        if self.features.get("QStartNoAckMode") == "+" and self.request(b"QStartNoAckMode") == "OK":
            self._ack = False
        stop = parse_stop_reply(self.request(b"?"))
        self.last_stop = stop
        self._running = stop is None
        self.registers = self._read_target_description()

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                with contextlib.suppress(OSError):
                    self._sock.close()

    def __enter__(self) -> GdbRemote:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # ---------------------------------------------------------------- framing

    def _deadline(self, timeout: float | None) -> float:
        return time.monotonic() + (self.timeout if timeout is None else timeout)

    def _send_raw(self, data: bytes, deadline: float, what: str) -> None:
        if self._closed:
            raise GdbConnectionError(f"gdbstub connection to {self.address} is closed")
        view = memoryview(data)
        while view:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise GdbTimeout(f"timed out sending {what} to gdbstub at {self.address}",
                                 expected="the stub to accept data", actual="socket not writable")
            _, writable, _ = select.select([], [self._sock], [], remaining)
            if not writable:
                continue
            try:
                sent = self._sock.send(view)
            except OSError as exc:
                raise GdbConnectionError(f"gdbstub at {self.address} dropped the link: {exc}") from exc
            view = view[sent:]

    def _recv(self, wait: float, what: str) -> bool:
        """Wait up to ``wait`` seconds for data; False when none came."""
        readable, _, _ = select.select([self._sock], [], [], max(0.0, wait))
        if not readable:
            return False
        try:
            data = self._sock.recv(65536)
        except BlockingIOError:
            return False
        except OSError as exc:
            raise GdbConnectionError(f"gdbstub at {self.address} dropped the link: {exc}") from exc
        if not data:
            self.close()
            raise GdbConnectionError(f"gdbstub at {self.address} closed the link while waiting for {what}",
                                     fix="the machine probably exited; check its log")
        self._buf += data
        return True

    def _fill(self, deadline: float, what: str) -> None:
        """Read more into the buffer; GdbTimeout when nothing came before the deadline."""
        if not self._recv(deadline - time.monotonic(), what) and time.monotonic() >= deadline:
            raise GdbTimeout(f"timed out waiting for {what} from gdbstub at {self.address}",
                             expected=what, actual=f"{len(self._buf)} bytes: {bytes(self._buf[:60])!r}")

    def _parse(self) -> None:
        """Move complete packets from the byte buffer to the packet queue; count acks."""
        buf = self._buf
        while buf:
            head = buf[0]
            if head == 0x2B:  # '+'
                self._acks += 1
                del buf[0]
            elif head == 0x2D:  # '-'
                self._naks += 1
                del buf[0]
            elif head in (0x24, 0x25):  # '$' packet, '%' notification
                end = buf.find(b"#")
                if end == -1 or len(buf) < end + 3:
                    return
                body = bytes(buf[1:end])
                cs = bytes(buf[end + 1: end + 3])
                del buf[: end + 3]
                if head == 0x25:
                    continue  # notifications belong to non-stop mode, which is not used
                if self._ack:
                    ok = cs.lower() == f"{checksum(body):02x}".encode()
                    self._sock.send(b"+" if ok else b"-")
                    if not ok:
                        log.warning("bad checksum from %s, asked for a resend", self.address)
                        continue
                self._packets.append(unescape(body))
            else:
                del buf[0]  # noise between packets

    def _take_packet(self) -> bytes | None:
        """Pop the oldest complete packet body, or None."""
        self._parse()
        return self._packets.popleft() if self._packets else None

    def _read_packet(self, deadline: float, what: str) -> bytes:
        while True:
            packet = self._take_packet()
            if packet is not None:
                return packet
            self._fill(deadline, what)

    def _send_packet(self, payload: bytes, deadline: float) -> None:
        data = frame(payload)
        what = payload[:20].decode(errors="replace")
        for _attempt in range(3):
            self._acks = self._naks = 0
            self._send_raw(data, deadline, what)
            if not self._ack:
                return
            while True:
                self._parse()
                if self._acks:
                    return
                if self._naks:
                    break
                self._fill(deadline, f"ack for {what!r}")
        raise GdbRemoteError(f"gdbstub at {self.address} rejected packet {what!r} three times")

    def request(self, payload: bytes | str, timeout: float | None = None) -> str:
        """Send one packet and return the reply body (stop replies of a resume are not expected)."""
        if isinstance(payload, str):
            payload = payload.encode()
        deadline = self._deadline(timeout)
        with self._lock:
            self._send_packet(payload, deadline)
            reply = self._read_reply(deadline, payload)
        return reply.decode("latin-1")

    def _read_reply(self, deadline: float, payload: bytes) -> bytes:
        what = f"reply to {payload[:20].decode(errors='replace')!r}"
        while True:
            packet = self._read_packet(deadline, what)
            if payload != b"?" and packet[:1] in b"ST" and parse_stop_reply(packet.decode("latin-1")):
                # unsolicited: QEMU stops the machine when a client attaches and says so
                self.last_stop = parse_stop_reply(packet.decode("latin-1"))
                self._running = False
                continue
            if packet.startswith(b"O") and payload.startswith(b"qRcmd") and packet != b"OK":
                self.console_output += bytes.fromhex(packet[1:].decode())
                continue
            return packet

    @staticmethod
    def _check(reply: str, what: str) -> str:
        if reply.startswith("E") and len(reply) == 3:
            raise GdbRemoteError(f"gdbstub refused {what}: error {reply}")
        if reply == "":
            raise GdbRemoteError(f"gdbstub does not support {what} (empty reply)")
        return reply

    # ---------------------------------------------------------------- memory

    def _chunk(self, hex_encoded: bool) -> int:
        room = self.packet_size - 32
        return max(16, room // 2 if hex_encoded else room)

    def read_memory(self, addr: int, n: int, timeout: float | None = None) -> bytes:
        out = bytearray()
        step = self._chunk(True)
        while len(out) < n:
            size = min(step, n - len(out))
            at = addr + len(out)
            reply = self._check(self.request(f"m{at:x},{size:x}", timeout),
                                f"read of {size} bytes at 0x{at:08x}")
            data = bytes.fromhex(reply)
            if not data:
                raise GdbRemoteError(f"gdbstub returned no data for 0x{at:08x}")
            out += data
        return bytes(out)

    def write_memory(self, addr: int, data: bytes, timeout: float | None = None) -> None:
        step = self._chunk(True)
        for off in range(0, len(data), step):
            part = data[off: off + step]
            at = addr + off
            packet = f"M{at:x},{len(part):x}:".encode() + part.hex().encode()
            self._check(self.request(packet, timeout), f"write of {len(part)} bytes at 0x{at:08x}")

    # ---------------------------------------------------------------- registers

    def _read_target_description(self) -> dict[str, Register]:
        if self.features.get("qXfer:features:read") != "+":
            return {}
        xml = self._xfer("features", "target.xml")
        regs: list[tuple[str, int, int]] = []
        next_num = 0
        self._collect_regs(xml, regs, next_num)
        offset = 0
        out: dict[str, Register] = {}
        for name, number, bitsize in sorted(regs, key=lambda r: r[1]):
            out[name] = Register(name, number, bitsize, offset)
            offset += bitsize // 8
        return out

    def _collect_regs(self, xml: str, regs: list[tuple[str, int, int]], next_num: int) -> int:
        # QEMU's descriptions use an undeclared 'xi:' prefix, so a strict XML parser refuses them.
        for match in _XML_ELEMENT.finditer(xml):
            attrs = dict(_XML_ATTR.findall(match.group("attrs")))
            if match.group("tag") == "xi:include":
                next_num = self._collect_regs(self._xfer("features", attrs["href"]), regs, next_num)
            else:
                number = int(attrs.get("regnum", next_num))
                regs.append((attrs["name"], number, int(attrs["bitsize"])))
                next_num = number + 1
        return next_num

    def _xfer(self, obj: str, annex: str) -> str:
        out = bytearray()
        step = self.packet_size - 8
        while True:
            reply = self.request(f"qXfer:{obj}:read:{annex}:{len(out):x},{step:x}").encode("latin-1")
            if not reply or reply[:1] not in b"lm":
                raise GdbRemoteError(f"gdbstub failed qXfer {obj} {annex}: {reply[:20]!r}")
            out += reply[1:]
            if reply[:1] == b"l":
                return out.decode()

    def register_number(self, name: str) -> int:
        reg = self.registers.get(name)
        if reg is None:
            raise GdbRemoteError(f"gdbstub has no register {name!r}", expected=", ".join(self.registers))
        return reg.number

    def read_registers(self) -> dict[int, int]:
        """All registers of the 'g' packet, by register number (little-endian target)."""
        raw = bytes.fromhex(self._check(self.request("g"), "register read"))
        out: dict[int, int] = {}
        if not self.registers:
            return {i: int.from_bytes(raw[i * 4: i * 4 + 4], "little") for i in range(min(16, len(raw) // 4))}
        for reg in self.registers.values():
            if reg.offset is not None and reg.offset + reg.bitsize // 8 <= len(raw):
                out[reg.number] = int.from_bytes(raw[reg.offset: reg.offset + reg.bitsize // 8], "little")
        return out

    def read_register(self, n: int) -> int:
        reply = self._check(self.request(f"p{n:x}"), f"read of register {n}")
        return int.from_bytes(bytes.fromhex(reply), "little")

    def write_register(self, n: int, value: int, size: int = 4) -> None:
        data = (value & ((1 << (size * 8)) - 1)).to_bytes(size, "little").hex()
        reply = self._check(self.request(f"P{n:x}={data}"), f"write of register {n}")
        if reply != "OK":
            raise GdbRemoteError(f"gdbstub answered {reply!r} to a write of register {n}")

    # ---------------------------------------------------------------- execution

    def is_halted(self) -> bool:
        """True once a stop reply arrived (polls the socket without blocking)."""
        with self._lock:
            if self._running:
                self._poll_stop(time.monotonic())
            return not self._running

    def _poll_stop(self, deadline: float) -> StopReply | None:
        """Consume packets until a stop reply or the deadline (None then)."""
        while True:
            packet = self._take_packet()
            if packet is not None:
                text = packet.decode("latin-1")
                stop = parse_stop_reply(text)
                if stop is not None:
                    self._running = False
                    self.last_stop = stop
                    if stop.kind in ("W", "X"):
                        raise GdbConnectionError(f"the machine behind {self.address} exited ({text})")
                    return stop
                if text.startswith("O") and text != "OK":
                    self.console_output += bytes.fromhex(text[1:])
                continue
            if not self._recv(deadline - time.monotonic(), "stop reply") and time.monotonic() >= deadline:
                return None

    def wait_halted(self, timeout: float | None = None) -> StopReply:
        deadline = self._deadline(timeout)
        with self._lock:
            if not self._running and self.last_stop is not None:
                return self.last_stop
            stop = self._poll_stop(deadline)
            if stop is None:
                raise GdbTimeout(f"the core behind {self.address} did not halt in time",
                                 expected="a stop reply", actual="the core kept running")
            return stop

    def halt(self, timeout: float | None = None) -> StopReply:
        deadline = self._deadline(timeout)
        with self._lock:
            if not self._running:
                assert self.last_stop is not None
                return self.last_stop
            self._send_raw(_INTERRUPT, deadline, "interrupt")
            stop = self._poll_stop(deadline)
            if stop is None:
                raise GdbTimeout(f"the core behind {self.address} did not stop after an interrupt",
                                 expected="a stop reply to 0x03", actual="no reply before the deadline")
            return stop

    def cont(self, timeout: float | None = None) -> None:
        with self._lock:
            if self._running:
                return
            self._send_packet(b"c", self._deadline(timeout))
            self._running = True
            self.last_stop = None

    def step(self, timeout: float | None = None) -> StopReply:
        deadline = self._deadline(timeout)
        with self._lock:
            if self._running:
                raise GdbRemoteError("cannot single-step a running core: halt it first")
            self._send_packet(b"s", deadline)
            self._running = True
            stop = self._poll_stop(deadline)
            if stop is None:
                raise GdbTimeout(f"single step on {self.address} did not complete", expected="a stop reply")
            return stop

    def monitor(self, command: str, timeout: float | None = None) -> str:
        """Run a stub monitor command (``qRcmd``); returns its text output."""
        with self._lock:
            self.console_output.clear()
            reply = self.request(b"qRcmd," + command.encode().hex().encode(), timeout)
            if (reply.startswith("E") and len(reply) == 3) or reply == "":
                raise GdbRemoteError(f"gdbstub refused monitor command {command!r}: {reply or 'unsupported'}")
            text = self.console_output.decode(errors="replace")
            if reply not in ("OK",):
                text += bytes.fromhex(reply).decode(errors="replace")
            return text
