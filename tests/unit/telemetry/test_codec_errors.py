"""Malformed buffers raise DecodeError naming the offset and what is wrong; absent scalars take defaults."""

from __future__ import annotations

import struct
from collections.abc import Callable
from pathlib import Path

import flatbuffers
import pytest

from harness.errors import CheckFailed
from harness.telemetry import generated as fbs
from harness.telemetry.codec import DecodeError, decode
from harness.telemetry.model import LogLevel, Process, ProcessEventType

VECTORS = Path(__file__).resolve().parents[3] / "fixtures" / "vectors"
HEARTBEAT = (VECTORS / "heartbeat-flatcc.bin").read_bytes()

# Landmarks of heartbeat-flatcc.bin (flatcc layout; read from the bytes):
MESSAGE = 0x04  # Message table; its vtable is at 0x76
MESSAGE_VT = 0x76
EVENTS_VECTOR = 0x14
EVENT_VT = 0x68
PAYLOAD_TYPE = 0x38  # Event.payload_type byte
MODULE_ID = 0x44  # the string's length word; text at 0x48, NUL at 0x60


def _patched(offset: int, fmt: str, value: int) -> bytes:
    data = bytearray(HEARTBEAT)
    struct.pack_into(fmt, data, offset, value)
    return bytes(data)


def _fails(data: bytes, offset: int, *words: str) -> DecodeError:
    with pytest.raises(DecodeError) as info:
        decode(data)
    err = info.value
    assert err.offset == offset, str(err)
    for word in words:
        assert word in str(err), str(err)
    assert str(err).startswith(f"offset {offset} (0x{offset:x}): ")
    return err


def test_decode_error_is_a_check_failure() -> None:
    err = _fails(b"", 0, "at least 8 bytes")
    assert isinstance(err, CheckFailed)
    assert err.exit_code == 1


@pytest.mark.parametrize(
    ("offset", "fmt", "value", "at", "words"),
    [
        (0, "<I", 10_000, 10_000, ("Message", "past the end")),
        (MESSAGE, "<i", -100_000, MESSAGE, ("Message", "vtable at 100004", "outside")),
        (MESSAGE, "<i", 1_000, MESSAGE, ("vtable at -996",)),
        (MESSAGE_VT, "<H", 3, MESSAGE_VT, ("vtable size 3",)),
        (MESSAGE_VT + 2, "<H", 500, MESSAGE_VT + 2, ("table size 500",)),
        (MESSAGE_VT + 4, "<H", 0, MESSAGE, ("Message.security_module_id is required but absent",)),
        (MESSAGE_VT + 10, "<H", 0, MESSAGE, ("Message.events is required but absent",)),
        (MESSAGE_VT + 10, "<H", 0x40, MESSAGE_VT + 10, ("Message.events", "outside the 16-byte table")),
        (EVENTS_VECTOR, "<I", 0x7FFF_FFFF, EVENTS_VECTOR, ("Message.events", "2147483647 elements")),
        (EVENT_VT + 4, "<H", 0, 0x1C, ("Event.id is required",)),
        (EVENT_VT + 12, "<H", 0, 0x1C, ("Event.payload is required",)),
        (PAYLOAD_TYPE, "<B", 9, PAYLOAD_TYPE, ("payload_type 9 is not a Payload type",)),
        (PAYLOAD_TYPE, "<B", 0, PAYLOAD_TYPE, ("payload_type 0",)),
        (MODULE_ID, "<I", 0xFFFF_FFFF, MODULE_ID, ("security_module_id", "runs past the end")),
        (0x60, "<B", ord("x"), 0x60, ("not NUL-terminated",)),
        (0x49, "<B", 0xFF, 0x49, ("not UTF-8",)),
    ],
)
def test_malformed_heartbeat(offset: int, fmt: str, value: int, at: int, words: tuple[str, ...]) -> None:
    _fails(_patched(offset, fmt, value), at, *words)


@pytest.mark.parametrize("size", [0, 1, 7])
def test_too_short(size: int) -> None:
    _fails(HEARTBEAT[:size], 0, f"got {size}")


def test_every_truncation_of_the_vector_fails_cleanly() -> None:
    for size in range(len(HEARTBEAT)):  # the buffer ends with the Message vtable: every byte is needed
        with pytest.raises(DecodeError):
            decode(HEARTBEAT[:size])


def test_decode_rejects_non_bytes() -> None:
    with pytest.raises(TypeError):
        decode("not bytes")  # type: ignore[arg-type]


# ---- buffers built field by field with the generated builder (the model cannot express them) ----


def _message_with(kind: int, build_payload: Callable[[flatbuffers.Builder], int], events: int = 1) -> bytes:
    b = flatbuffers.Builder(64)
    payload = build_payload(b)
    offsets = []
    for _ in range(events):
        fbs.Event.Start(b)
        fbs.Event.AddPayloadType(b, kind)
        fbs.Event.AddPayload(b, payload)
        fbs.Event.AddId(b, fbs.UUID.CreateUUID(b, [7] * 16))
        offsets.append(fbs.Event.End(b))
    fbs.Message.StartEventsVector(b, len(offsets))
    for off in reversed(offsets):
        b.PrependUOffsetTRelative(off)
    vector = b.EndVector()
    module_id = b.CreateString("m")
    fbs.Message.Start(b)
    fbs.Message.AddSecurityModuleId(b, module_id)
    fbs.Message.AddEvents(b, vector)
    b.Finish(fbs.Message.End(b))
    return bytes(b.Output())


def _flows(protocol: int, flows: int = 1, executable: bool = False) -> Callable[[flatbuffers.Builder], int]:
    def build(b: flatbuffers.Builder) -> int:
        name = b.CreateSharedString("/bin/x") if executable else 0
        fbs.NetworkActivityCommon.Start(b)
        fbs.NetworkActivityCommon.AddProtocol(b, protocol)
        fbs.NetworkActivityCommon.AddExecutable(b, name)
        common = fbs.NetworkActivityCommon.End(b)
        fbs.NetworkActivityV4.Start(b)
        fbs.NetworkActivityV4.AddAddresses(b, fbs.IPv4Addresses.CreateIPv4Addresses(b, 1, 2))
        fbs.NetworkActivityV4.AddCommon(b, common)
        flow = fbs.NetworkActivityV4.End(b)
        b.StartVector(4, flows, 4)
        for _ in range(flows):
            b.PrependUOffsetTRelative(flow)  # every element points at the same table
        vector = b.EndVector()
        fbs.NetworkActivity.Start(b)
        fbs.NetworkActivity.AddIpv4Activity(b, vector)
        return int(fbs.NetworkActivity.End(b))

    return build


def test_unknown_protocol_is_rejected() -> None:
    with pytest.raises(DecodeError, match=r"NetworkActivityCommon.protocol: 7 is not one of 0, 1, 2"):
        decode(_message_with(1, _flows(7)))


def test_shared_tables_decode_within_budget() -> None:
    msg = decode(_message_with(1, _flows(1, flows=8, executable=True), events=3))
    assert [len(e.payload.flows) for e in msg.events] == [8, 8, 8]  # type: ignore[union-attr]


def test_amplifying_buffer_is_refused() -> None:
    """A small buffer whose 1500 events share one activity of 1500 shared flows would decode 2.25 M flows."""
    data = _message_with(1, _flows(1, flows=1500), events=1500)
    assert len(data) < 100_000
    with pytest.raises(DecodeError, match="more objects than"):
        decode(data)


def _empty_table(module: object) -> Callable[[flatbuffers.Builder], int]:
    def build(b: flatbuffers.Builder) -> int:
        module.Start(b)  # type: ignore[attr-defined]
        return int(module.End(b))  # type: ignore[attr-defined]

    return build


def test_absent_scalars_take_schema_defaults() -> None:
    msg = decode(_message_with(6, _empty_table(fbs.Process)))
    assert msg.events[0].payload == Process()
    assert msg.events[0].payload.hit_count == 1  # type: ignore[union-attr]
    assert msg.events[0].payload.event_type is ProcessEventType.FORK  # type: ignore[union-attr]
    assert (msg.security_module_version.to_int(), msg.timezone, msg.events[0].time) == (0, 0, 0)


def test_required_fields_of_schema_only_tables() -> None:
    def record_without_filename(b: flatbuffers.Builder) -> int:
        text = b.CreateString("hello")
        fbs.Record.Start(b)
        fbs.Record.AddMessage(b, text)
        fbs.Record.AddLevel(b, LogLevel.INFO)
        rec = fbs.Record.End(b)
        b.StartVector(4, 1, 4)
        b.PrependUOffsetTRelative(rec)
        vector = b.EndVector()
        fbs.Log.Start(b)
        fbs.Log.AddLogs(b, vector)
        return int(fbs.Log.End(b))

    with pytest.raises(DecodeError, match=r"Record\.filename is required but absent"):
        decode(_message_with(7, record_without_filename))
    with pytest.raises(DecodeError, match=r"NetworkActivityV4\.common is required but absent"):
        decode(_message_with(1, _v4_without_common))


def _v4_without_common(b: flatbuffers.Builder) -> int:
    fbs.NetworkActivityV4.Start(b)
    fbs.NetworkActivityV4.AddAddresses(b, fbs.IPv4Addresses.CreateIPv4Addresses(b, 1, 2))
    flow = fbs.NetworkActivityV4.End(b)
    b.StartVector(4, 1, 4)
    b.PrependUOffsetTRelative(flow)
    vector = b.EndVector()
    fbs.NetworkActivity.Start(b)
    fbs.NetworkActivity.AddIpv4Activity(b, vector)
    return int(fbs.NetworkActivity.End(b))
