"""`WATTFLEET_LOG_FORMAT=json` for `python -m control_api`: its lines and uvicorn's (the
server's and the access log) are each one JSON object; probes that succeed leave no
access line."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest

from control_api.demo.processes import stop_process
from control_api.demo.services import start_api
from tests.support.control_api import api_env
from tests.support.services import free_port

pytestmark = pytest.mark.integration


def _get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def test_the_api_and_uvicorn_log_json_lines_when_told(database, broker, tmp_path):
    port = free_port()
    log_path = tmp_path / "api.log"
    proc = start_api(api_env(database, broker, api_port=port, log_format="json"), port, log_path)
    try:
        # start_api waited for /readiness; a request that is not a probe is logged.
        statuses = [_get(f"http://127.0.0.1:{port}{path}") for path in ("/health", "/metrics")]
        assert statuses == [200, 200]
        assert _get(f"http://127.0.0.1:{port}/nodes") == 401
    finally:
        stop_process(proc)  # uvicorn re-raises the SIGTERM it stopped on: no exit status 0
    entries = [json.loads(line) for line in log_path.read_text().splitlines()]
    assert all({"ts", "level", "logger", "message"} <= set(e) for e in entries)
    assert any(
        e["logger"] == "uvicorn.error" and e["message"].startswith("Uvicorn running on")
        for e in entries
    )
    access = [e["message"].split(" - ", 1)[1] for e in entries if e["logger"] == "uvicorn.access"]
    assert access == ['"GET /nodes HTTP/1.1" 401']
