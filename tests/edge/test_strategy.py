"""The dynamic strategy on the agent, with the coordinator interface over real HTTP and
the simulated inverter: switched off, the inverter goes back to self-consumption, the
coordinator's context says so, and only a self-consumption decision is taken."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from edge.commands import STORCTL_AUTO, STORCTL_CHARGE
from edge.strategy import STATE_NAME, Strategy
from tests.edge.simulated_site import simulated_site
from tests.edge.test_coordinator import DECISION, call, post
from tests.support.services import free_port

pytestmark = pytest.mark.integration

NOON = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def test_strategy_off_puts_the_inverter_back_in_self_consumption_and_refuses_others(tmp_path):
    port = free_port()
    with simulated_site(
        tmp_path, NOON, coordinator_port=port, strategy_enabled=False, strategy="peak_shaving"
    ) as (agent, _inverter, _clock):
        # The coordinator had the battery charging from the grid before the switch.
        agent.device.discover()
        agent.device.write(124, {"InWRte": 50.0, "StorCtl_Mod": STORCTL_CHARGE})
        assert agent.strategy.owes_self_consumption
        assert agent.poll() is not None
        assert agent.device.read_model(124)["StorCtl_Mod"] == STORCTL_AUTO
        assert not agent.strategy.owes_self_consumption
        assert json.loads((tmp_path / STATE_NAME).read_text()) == {"enabled": False}

        assert agent.coordinator_server is not None
        agent.coordinator_server.start()
        try:
            status, context = call(port, "GET", "/context")
            assert status == 200
            assert context["strategy"] == {"enabled": False, "name": "peak_shaving"}
            assert context["safety_lock"]["locked"] is False
            status, refused = post(port, DECISION)
            assert status == 409
            assert "dynamic strategy is off" in refused["error"]
            assert call(port, "GET", "/decision") == (200, None)
            status, _ = post(port, {"mode": "SELF_CONSUMPTION", "reason": "strategy off"})
            assert status == 200
        finally:
            agent.coordinator_server.stop()
        assert agent.snapshot()["strategy"] == {"enabled": False, "name": "peak_shaving"}

    # Restarted still off: the inverter is the site's again, the agent leaves it be.
    with simulated_site(tmp_path, NOON, strategy_enabled=False) as (agent, _inverter, _clock):
        assert not agent.strategy.owes_self_consumption
    # Switched on, then off again: owed once more.
    with simulated_site(tmp_path, NOON, strategy_enabled=True) as (agent, _inverter, _clock):
        assert agent.snapshot()["strategy"]["enabled"]
    with simulated_site(tmp_path, NOON, strategy_enabled=False) as (agent, _inverter, _clock):
        assert agent.strategy.owes_self_consumption


def test_strategy_on_takes_any_decision(tmp_path):
    port = free_port()
    with simulated_site(tmp_path, NOON, coordinator_port=port) as (agent, _inverter, _clock):
        assert not agent.strategy.owes_self_consumption
        assert agent.coordinator_server is not None
        agent.coordinator_server.start()
        try:
            assert call(port, "GET", "/context")[1]["strategy"] == {
                "enabled": True,
                "name": "time_of_use",
            }
            assert post(port, DECISION)[0] == 200
        finally:
            agent.coordinator_server.stop()


def test_a_strategy_state_that_cannot_be_written_stops_nothing(tmp_path):
    # A directory where the file goes (as a full or read-only disk would): the agent
    # still starts and polls; the return to self-consumption is owed again after the
    # next restart, which only repeats a write of the inverter's default.
    (tmp_path / STATE_NAME).mkdir()
    assert Strategy(tmp_path, True, "time_of_use").enabled
    off = Strategy(tmp_path, False, "time_of_use")
    assert off.owes_self_consumption
    off.returned_to_self_consumption()
    assert not off.owes_self_consumption


def test_a_locked_site_takes_only_self_consumption_from_its_coordinator(tmp_path):
    port = free_port()
    with simulated_site(tmp_path, NOON, coordinator_port=port) as (agent, _inverter, _clock):
        assert agent.coordinator_server is not None
        agent.coordinator_server.start()
        try:
            assert post(port, DECISION)[0] == 200  # the strategy is on, the site unlocked
            agent.safety_lock.lock_locally("installer at work")
            status, context = call(port, "GET", "/context")
            assert context["safety_lock"]["locked"] is True
            status, refused = post(port, DECISION)
            assert status == 409
            assert (
                "safety-locked (local, by site: status page: installer at work)"
                in (refused["error"])
            )
            status, _ = post(port, {"mode": "SELF_CONSUMPTION", "reason": "locked"})
            assert status == 200
            assert call(port, "GET", "/decision")[1]["mode"] == "SELF_CONSUMPTION"

            agent.safety_lock.unlock_locally()
            assert post(port, DECISION)[0] == 200
        finally:
            agent.coordinator_server.stop()
