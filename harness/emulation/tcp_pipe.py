"""``python -m harness.emulation.tcp_pipe HOST PORT``: stdin/stdout ↔ one TCP connection.

QEMU user networking runs this for each connection a board opens to a harness-side service
(``guestfwd=tcp:10.0.2.100:PORT-cmd:...``): a ``tcp:`` guestfwd would connect once, at QEMU's
start, and carry a single connection; a command per connection behaves like a real network.
"""

from __future__ import annotations

import os
import selectors
import socket
import sys


def pipe(host: str, port: int, timeout: float = 10.0) -> None:
    sock = socket.create_connection((host, port), timeout=timeout)
    sock.settimeout(None)
    stdin, stdout = sys.stdin.fileno(), sys.stdout.fileno()
    sel = selectors.DefaultSelector()
    sel.register(stdin, selectors.EVENT_READ, "in")
    sel.register(sock, selectors.EVENT_READ, "sock")
    with sock:
        while True:
            for key, _ in sel.select():
                if key.data == "in":
                    data = os.read(stdin, 65536)
                    if not data:
                        sock.shutdown(socket.SHUT_WR)
                        sel.unregister(stdin)
                        continue
                    sock.sendall(data)
                else:
                    data = sock.recv(65536)
                    if not data:
                        return
                    os.write(stdout, data)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2 or not args[1].isdigit():
        print("usage: python -m harness.emulation.tcp_pipe HOST PORT", file=sys.stderr)
        return 2
    try:
        pipe(args[0], int(args[1]))
    except OSError as exc:
        print(f"tcp_pipe: {args[0]}:{args[1]}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
