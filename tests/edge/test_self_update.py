"""SELF_UPDATE end to end: the agent runs from wheels installed in its own virtualenv (as
on a Pi), pip installs the requested version from a folder of wheels, the agent restarts
into it and reports it; a version that cannot work is rolled back by itself."""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from contract.commands import CommandType, SelfUpdateParams
from tests.conftest import SIMULATOR_UNIT
from tests.edge.test_commands import SECRET, Hub
from tests.support.agent import AgentProcess
from tests.support.fleet import Node, dynsec, unique
from tests.support.installed_agent import InstalledAgent, build_wheel
from tests.support.services import wait_for

pytestmark = pytest.mark.e2e


def _cannot_find_the_inverter(src: Path) -> None:
    # A release with a broken register map: it runs, but never finds the SunS marker.
    registers = src / "edge" / "sunspec.yaml"
    registers.write_text(
        registers.read_text().replace("markers: [0, 40000, 50000]", "markers: [1000]")
    )


def _crashes_at_start(src: Path) -> None:
    # A release that fails before it ever polls: the deadline never comes into play.
    agent = src / "edge" / "agent.py"
    agent.write_text(
        agent.read_text().replace(
            "        self._stop = stop\n",
            '        raise RuntimeError("broken release")\n',
            1,
        )
    )


@pytest.fixture(scope="module")
def wheels() -> Iterator[Path]:
    work = Path(tempfile.mkdtemp(prefix="wattfleet-wheels-"))
    out = work / "wheels"
    build_wheel(out, "0.1.0", work)
    build_wheel(out, "0.1.1", work)
    build_wheel(out, "0.1.2", work, _cannot_find_the_inverter)
    build_wheel(out, "0.1.3", work, _crashes_at_start)
    yield out
    shutil.rmtree(work, ignore_errors=True)


def supervised_agent(
    broker, simulator, wheels, tmp_path, deadline_s: float
) -> tuple[Node, AgentProcess, InstalledAgent]:
    """Release 0.1.0 installed from a wheel, enrolled, and running as systemd runs it."""
    installed = InstalledAgent(tmp_path / "pi", wheels).create("0.1.0")
    node = Node(unique("node"), 0, "node-password")
    with dynsec(broker) as admin:
        admin.add_node(node.id, node.password)
    agent = AgentProcess(
        tmp_path,
        broker,
        node,
        simulator,
        SIMULATOR_UNIT,
        installed=installed,
        node_secret=SECRET.decode(),
        poll_interval_s=0.5,
        config_apply_deadline_s=deadline_s,
        update_find_links=str(wheels),
    ).supervise()
    return node, agent, installed


def test_update_fails_cleanly_applies_and_rolls_back(broker, simulator, wheels, tmp_path):
    node, agent, installed = supervised_agent(broker, simulator, wheels, tmp_path, deadline_s=8)
    hub = Hub(broker, node.id)
    try:
        wait_for(lambda: "connected to" in agent.log_path.read_text(), 30, "agent connected")

        def status():
            return json.loads(agent.http("/status.json"))

        assert status()["agent_version"] == "0.1.0"
        # The status page is package data: the wheel must carry it.
        assert "status.json" in agent.http("/")

        missing = hub.send(CommandType.SELF_UPDATE, SelfUpdateParams(version="9.9.9"))
        failed = hub.outcome(missing, timeout=60)
        assert failed["state"] == "failed"
        assert failed["detail"].startswith("update to 9.9.9 failed: ")
        assert "9.9.9" in failed["detail"]
        assert agent.restarts == 0
        assert installed.version() == "0.1.0"

        update = hub.send(CommandType.SELF_UPDATE, SelfUpdateParams(version="0.1.1"))
        done = hub.outcome(update, timeout=90)
        assert done == {**done, "state": "succeeded", "detail": "updated from 0.1.0 to 0.1.1"}
        assert agent.restarts == 1
        assert installed.version() == "0.1.1"
        wait_for(lambda: status()["agent_version"] == "0.1.1", 20, "the new version in status")

        broken = hub.send(CommandType.SELF_UPDATE, SelfUpdateParams(version="0.1.2"))
        rolled_back = hub.outcome(broken, timeout=120)
        assert rolled_back["state"] == "failed"
        assert rolled_back["detail"] == "rolled back: inverter unreachable with version 0.1.2"
        assert agent.restarts == 3  # into 0.1.2, and back
        assert installed.version() == "0.1.1"
        wait_for(lambda: status()["agent_version"] == "0.1.1", 20, "the old version again")
    finally:
        agent.stop_supervising()
        agent.release()


def test_a_release_that_crashes_at_start_rolls_back_at_once(broker, simulator, wheels, tmp_path):
    # The deadline far off: the rollback must not wait for it.
    node, agent, installed = supervised_agent(broker, simulator, wheels, tmp_path, deadline_s=600)
    hub = Hub(broker, node.id)
    try:
        wait_for(lambda: "connected to" in agent.log_path.read_text(), 30, "agent connected")
        broken = hub.send(CommandType.SELF_UPDATE, SelfUpdateParams(version="0.1.3"))
        rolled_back = hub.outcome(broken, timeout=120)
        assert rolled_back["state"] == "failed"
        assert rolled_back["detail"] == (
            "rolled back: the agent failed to start (broken release) with version 0.1.3"
        )
        assert agent.restarts == 2  # into 0.1.3, and back
        assert installed.version() == "0.1.0"
    finally:
        agent.stop_supervising()
        agent.release()
