"""contract/process.py's logging, as a service's `__main__` sets it up: each in a fresh
interpreter, since it configures the process's root logger."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime, timedelta

from tests.support.services import REPO, service_env

# A scheduler job runs once, then a line with a traceback is logged.
SCRIPT = """
import logging, sys, threading
from apscheduler.schedulers.background import BackgroundScheduler
from contract.process import configure_logging

configure_logging(sys.argv[1], sys.argv[2])
ran = threading.Event()
scheduler = BackgroundScheduler(timezone="UTC")
scheduler.add_job(ran.set, "interval", seconds=0.05)
scheduler.start()
assert ran.wait(10)
scheduler.shutdown(wait=True)
log = logging.getLogger("wattfleet.test")
log.info("a real event: %s", "node n-1 online")
try:
    raise ValueError("broken\\nacross lines")
except ValueError:
    log.exception("it failed")
"""


def _run(level: str, log_format: str) -> list[str]:
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, level, log_format],
        env=service_env(),
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert result.stdout == ""
    return result.stderr.splitlines()


def test_json_lines_parse_and_carry_time_level_logger_message_and_exception():
    before = datetime.now().astimezone()
    entries = [json.loads(line) for line in _run("INFO", "json")]
    assert [(e["level"], e["logger"], e["message"]) for e in entries] == [
        ("INFO", "wattfleet.test", "a real event: node n-1 online"),
        ("ERROR", "wattfleet.test", "it failed"),
    ]
    for entry in entries:
        ts = datetime.fromisoformat(entry["ts"])
        assert ts.utcoffset() == timedelta(0)
        assert before - timedelta(seconds=1) <= ts <= datetime.now().astimezone()
    assert "exception" not in entries[0]
    assert entries[1]["exception"].startswith("Traceback (most recent call last):")
    assert entries[1]["exception"].endswith("ValueError: broken\nacross lines")


def test_scheduler_runs_log_nothing_at_info_and_show_at_debug():
    text = _run("INFO", "text")
    assert len(text) > 2  # the traceback spans lines in text
    assert " INFO wattfleet.test a real event: node n-1 online" in text[0]
    assert not [line for line in text if "apscheduler" in line]
    debug = [json.loads(line) for line in _run("DEBUG", "json")]
    runs = [e for e in debug if e["logger"] == "apscheduler.executors.default"]
    assert any(e["message"].startswith("Running job") for e in runs)
    assert any("executed successfully" in e["message"] for e in runs)
