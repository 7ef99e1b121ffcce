"""`hil broker` arguments. harness/cli/broker.py belongs to the broker branch: rows the present code
fails are strict expected failures, so they show at the merge."""

from __future__ import annotations

from tests.badinput.case import error, folder, refused, write

SURFACE = "cli-broker"
B = "broker --kind embedded --run-dir run"
BROKER_BRANCH = "fixed on the broker branch"

CASES = [
    refused("bind-not-local", f"{B} --bind 8.8.8.8", r"8\.8\.8\.8", xfail=BROKER_BRANCH),
    refused("bind-not-an-address", f"{B} --bind notanip", r"notanip", xfail=BROKER_BRANCH),
    refused("port-99999", f"{B} --port 99999", r"--port.*99999", xfail=BROKER_BRANCH),
    refused("port-negative", f"{B} --port -1", r"--port.*-1", xfail=BROKER_BRANCH),
    refused("port-text", f"{B} --port abc", r"--port.*'abc'"),
    refused("kind-unknown", "broker --kind rabbitmq", r"invalid choice: 'rabbitmq'"),
    refused("device-id-bad", f"{B} --device a/b", r"device id 'a/b'"),
    refused("external-without-url", "broker --kind external --run-dir run", r"needs a URL"),
    refused("run-dir-a-file", "broker --kind embedded --run-dir f", r"--run-dir.*f.*is a file", write("f", "x"),
            xfail=BROKER_BRANCH),
    error("archive-a-folder", f"{B} --archive d", r"d.*is a folder", folder("d"), xfail=BROKER_BRANCH),
    error("ca-missing", "broker --kind external --url mqtts://127.0.0.1:1 --ca nope.pem --run-dir run",
          r"nope\.pem", xfail=BROKER_BRANCH),
]
