"""`WATTFLEET_LOG_FORMAT=json`: every line the collector writes, its own and its
libraries', is one JSON object."""

from __future__ import annotations

import json

import pytest

from tests.support.services import wait_for

pytestmark = pytest.mark.integration


def test_the_collector_logs_json_lines_when_told(collector_factory):
    # The fixture runs it at DEBUG: the scheduler's per-run lines show, in JSON too.
    collector = collector_factory(log_format="json", watchdog_interval_s="0.5").start()
    wait_for(lambda: "executed successfully" in collector.log(), 20, "a watchdog round")
    assert collector.stop() == 0
    lines = collector.log().splitlines()
    entries = [json.loads(line) for line in lines]
    assert all({"ts", "level", "logger", "message"} <= set(e) for e in entries)
    loggers = {e["logger"] for e in entries}
    assert {"collector.service", "apscheduler.executors.default"} <= loggers
    assert entries[-1]["message"] == "collector stopped"
