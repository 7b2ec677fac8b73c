"""The demo's process supervision, with real child processes: a restart waits its pause
(and a stop cuts it short), and a process whose start is interrupted does not outlive
the demo."""

from __future__ import annotations

import subprocess
import sys
import threading

import pytest

from control_api.demo.processes import RESTART_EXIT_STATUS, Supervised, stopped_if_not_ready
from tests.support.services import wait_for


def _exits_asking_for_a_restart() -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", f"raise SystemExit({RESTART_EXIT_STATUS})"])


def test_a_restart_waits_its_pause_and_a_stop_cuts_it_short(tmp_path):
    restarted: list[subprocess.Popen[bytes]] = []

    def restart() -> subprocess.Popen[bytes]:
        restarted.append(_exits_asking_for_a_restart())
        return restarted[-1]

    reports: list[str] = []
    first = _exits_asking_for_a_restart()
    supervised = Supervised(
        "agent", first, tmp_path / "agent.log", reports.append, restart, restart_delay_s=60
    )
    wait_for(lambda: first.poll() is not None, 10, "the first process to exit")
    assert supervised.stop(timeout=5) == RESTART_EXIT_STATUS
    # The watcher left its pause at once instead of sleeping it out, and never restarted.
    assert "watch agent" not in {t.name for t in threading.enumerate()}
    assert restarted == []
    assert reports == []
    assert supervised.restarts_total == 0


def test_a_process_whose_start_is_interrupted_is_stopped():
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    with pytest.raises(KeyboardInterrupt), stopped_if_not_ready(proc):
        raise KeyboardInterrupt  # Ctrl-C while waiting for it to listen
    assert proc.poll() is not None
