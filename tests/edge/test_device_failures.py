"""The agent's failing inverter: logged once at ERROR, then quietly until it answers."""

from __future__ import annotations

import logging
import subprocess
import sys

import pytest

from edge.agent import Agent
from edge.config import EdgeSettings
from tests.support.services import REPO, free_port, service_env, stop_process, wait_for_port

pytestmark = pytest.mark.integration


def test_an_unreachable_inverter_is_logged_once_until_it_answers(tmp_path, caplog):
    port = free_port()
    settings = EdgeSettings(
        node_id="site-down",
        modbus_port=port,
        modbus_unit_id=3,
        modbus_timeout_s=0.5,
        buffer_path=tmp_path / "buffer.sqlite3",
    )
    agent = Agent(settings)
    caplog.set_level(logging.DEBUG, logger="edge.agent")
    try:
        for _ in range(3):
            assert agent.poll() is None
        assert agent.device_available is False
        failures = [r for r in caplog.records if "inverter unavailable" in r.getMessage()]
        assert [r.levelno for r in failures] == [logging.ERROR, logging.DEBUG, logging.DEBUG]

        simulator = subprocess.Popen(
            [sys.executable, "-m", "edge.simulator", "--port", str(port), "--unit-id", "3"],
            cwd=REPO,
            env=service_env(),
            stdout=subprocess.DEVNULL,
        )
        try:
            wait_for_port(port, 15, simulator)
            assert agent.poll() is not None
        finally:
            stop_process(simulator)
    finally:
        agent.buffer.close()
    assert agent.device_available is True
    recovered = [r for r in caplog.records if r.getMessage() == "inverter available again"]
    assert [r.levelno for r in recovered] == [logging.INFO]
