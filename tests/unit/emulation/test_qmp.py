"""The QMP client against a fake QEMU on a unix socket."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.emulation.qmp import QmpClient, QmpError
from harness.errors import ServiceTimeout


@pytest.fixture
def fake_qemu(tmp_path: Path) -> Iterator[tuple[str, list[dict[str, object]]]]:
    path = tmp_path / "qmp"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(1)
    seen: list[dict[str, object]] = []

    def serve() -> None:
        conn, _ = server.accept()
        with conn, conn.makefile("rwb") as f:
            f.write(b'{"QMP": {"version": {}, "capabilities": []}}\r\n')
            f.flush()
            for line in f:
                request = json.loads(line)
                seen.append(request)
                if request["execute"] == "stop":
                    f.write(b'{"event": "STOP", "timestamp": {}}\r\n')
                if request["execute"] == "hang":
                    continue
                if request["execute"] == "bogus":
                    f.write(b'{"error": {"class": "CommandNotFound", "desc": "no bogus"}}\r\n')
                elif request["execute"] == "query-status":
                    f.write(b'{"return": {"status": "paused", "running": false}}\r\n')
                else:
                    f.write(b'{"return": {}}\r\n')
                f.flush()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"unix:{path}", seen
    server.close()


def test_negotiates_and_runs_commands_keeping_events(fake_qemu: tuple[str, list[dict[str, object]]]) -> None:
    address, seen = fake_qemu
    with QmpClient.connect(address, timeout=2) as qmp:
        assert qmp.execute("stop") == {}
        assert qmp.status() == "paused"
        assert [e["event"] for e in qmp.events] == ["STOP"]
        qmp.execute("set_link", {"name": "n0", "up": False})
    assert seen[0] == {"execute": "qmp_capabilities"}
    assert seen[-1] == {"execute": "set_link", "arguments": {"name": "n0", "up": False}}


def test_a_refused_command_raises_with_qemus_reason(fake_qemu: tuple[str, list[dict[str, object]]]) -> None:
    with QmpClient.connect(fake_qemu[0], timeout=2) as qmp, pytest.raises(QmpError, match="no bogus"):
        qmp.execute("bogus")


def test_no_reply_times_out_naming_the_command(fake_qemu: tuple[str, list[dict[str, object]]]) -> None:
    with QmpClient.connect(fake_qemu[0], timeout=2) as qmp, pytest.raises(ServiceTimeout, match="hang"):
        qmp.execute("hang", timeout=0.2)


def test_a_missing_socket_fails_after_the_deadline(tmp_path: Path) -> None:
    with pytest.raises(QmpError, match="could not connect"):
        QmpClient.connect(f"unix:{tmp_path / 'nothing'}", timeout=0.2)
