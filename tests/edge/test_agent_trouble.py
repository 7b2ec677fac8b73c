"""What the agent reports about its own trouble: a failing inverter (logged once at
ERROR, then quietly until it answers) and samples its buffer had to drop."""

from __future__ import annotations

import logging
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from edge.agent import Agent
from edge.config import EdgeSettings
from tests.support.services import REPO, free_port, service_env, stop_process, wait_for_port

pytestmark = pytest.mark.integration


@contextmanager
def agent_in_process(tmp_path, **settings: Any) -> Iterator[Agent]:
    """An agent that is built, not run: its loop's steps are called by the test."""
    agent = Agent(
        EdgeSettings(buffer_path=tmp_path / "buffer.sqlite3", status_port=free_port(), **settings)
    )
    try:
        yield agent
    finally:
        agent.status_server.server.server_close()
        agent.buffer.close()


def test_an_unreachable_inverter_is_logged_once_until_it_answers(tmp_path, caplog):
    port = free_port()
    caplog.set_level(logging.DEBUG, logger="edge.agent")
    with agent_in_process(
        tmp_path, node_id="site-down", modbus_port=port, modbus_unit_id=3, modbus_timeout_s=0.5
    ) as agent:
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
        assert agent.device_available is True
    recovered = [r for r in caplog.records if r.getMessage() == "inverter available again"]
    assert [r.levelno for r in recovered] == [logging.INFO]


def test_samples_dropped_by_the_buffer_bounds_are_counted(tmp_path):
    def dropped_total(agent: Agent) -> float | None:
        return agent.metrics.registry.get_sample_value(
            "wattfleet_edge_buffer_dropped_samples_total"
        )

    with agent_in_process(tmp_path, node_id="site-full", buffer_max_samples=2) as agent:
        now = agent.clock()
        for _ in range(5):
            agent.buffer.append({"node_id": "site-full"}, now)
        assert agent.prune_buffer() == 3
        assert dropped_total(agent) == pytest.approx(3)
    # The count is the buffer's, kept across restarts.
    with agent_in_process(tmp_path, node_id="site-full", buffer_max_samples=2) as again:
        assert dropped_total(again) == pytest.approx(3)
