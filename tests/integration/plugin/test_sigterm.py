"""SIGTERM to a pytest run of the harness (a CI job's timeout, ``kill``) interrupts it as Ctrl-C
does: the test under way is neither passed nor failed, no later test starts, and what the run
started (its broker) is stopped."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.integration.plugin.test_run_broker import REPO, mosquitto_pids_for

INNER = textwrap.dedent(
    '''
    import os
    import threading
    from pathlib import Path


    def test_waits_for_ever(hil_broker):
        with open(os.environ["HIL_TEST_FIFO"], "w") as fifo:  # tell the outer test: broker up, test under way
            fifo.write(hil_broker.url + "\\n")
        threading.Event().wait(600)


    def test_never_starts():
        Path(os.environ["HIL_TEST_FIFO"] + ".later").write_text("ran")
    '''
)


@pytest.mark.needs("mosquitto")
@pytest.mark.timeout(240)
def test_sigterm_interrupts_the_run_and_stops_what_it_started(tmp_path: Path) -> None:
    (tmp_path / "test_inner.py").write_text(INNER)
    fifo = tmp_path / "started"
    os.mkfifo(fifo)
    run_dir = tmp_path / "run"
    env = {**os.environ, "HIL_STATE": str(tmp_path / "state"), "HIL_TEST_FIFO": str(fifo)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:randomly", "--rootdir",
         str(tmp_path), "--lab", str(REPO / "boards"), "--report-dir", str(run_dir), "--broker-kind", "mosquitto",
         "--junitxml", str(tmp_path / "junit.xml"), str(tmp_path / "test_inner.py")],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        with fifo.open() as started:  # blocks until the inner test has the broker and is running
            assert started.readline().startswith("mqtt")
        assert mosquitto_pids_for(run_dir), "the run's broker should be up while its test runs"
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == pytest.ExitCode.INTERRUPTED, out[-3000:]
    assert "KeyboardInterrupt" in out and "failed" not in out.lower().replace("failed to", ""), out[-3000:]
    assert not (tmp_path / "started.later").exists(), "a test started after SIGTERM"
    assert mosquitto_pids_for(run_dir) == [], "the run's broker outlived the interrupted run"
