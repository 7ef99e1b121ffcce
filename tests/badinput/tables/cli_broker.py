"""`hil broker` arguments. harness/cli/broker.py belongs to the broker branch: rows the present code
fails are strict expected failures, so they show at the merge."""

from __future__ import annotations

from tests.badinput.case import error, folder, refused, write

SURFACE = "cli-broker"
B = "broker --kind embedded --run-dir run"

CASES = [
    refused("bind-not-local", f"{B} --bind 8.8.8.8", r"8\.8\.8\.8"),
    refused("bind-not-an-address", f"{B} --bind notanip", r"notanip"),
    refused("port-99999", f"{B} --port 99999", r"--port.*99999"),
    refused("port-negative", f"{B} --port -1", r"--port.*-1"),
    refused("port-text", f"{B} --port abc", r"--port.*'abc'"),
    refused("kind-unknown", "broker --kind rabbitmq", r"invalid choice: 'rabbitmq'"),
    refused("device-id-bad", f"{B} --device a/b", r"device id 'a/b'"),
    refused("external-without-url", "broker --kind external --run-dir run", r"needs a URL"),
    refused("run-dir-a-file", "broker --kind embedded --run-dir f", r"--run-dir.*f.*is a file", write("f", "x"),
            ),
    error("archive-a-folder", f"{B} --archive d", r"d.*is a (folder|directory)", folder("d")),
    error("ca-missing", "broker --kind external --url mqtts://127.0.0.1:1 --ca nope.pem --run-dir run",
          r"nope\.pem"),
]
