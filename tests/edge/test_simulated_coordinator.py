"""The simulator's rule-based site coordinator: its rule, and a simulator process running
it against a real agent's coordinator interface, its battery following the decision."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime
from typing import Any

import pytest

from edge.simulator.coordinator import CHARGE_FROM_GRID, SELF_CONSUMPTION, decide
from tests.edge.simulated_site import UNIT, SiteClock, built_agent
from tests.support.services import (
    REPO,
    free_port,
    service_env,
    stop_process,
    wait_for,
    wait_for_port,
)


def context(hour_prices: list[float], now: float, soc: float | None, pv: float) -> dict[str, Any]:
    return {
        "strategy": {"enabled": True},
        "safety_lock": {"locked": False},
        "prices_now": {"import_per_kwh": now, "currency": "PLN"},
        "prices_today": [{"import_per_kwh": p} for p in hour_prices],
        "reading": {"soc_percent": soc, "solar_power_w": pv},
    }


NIGHT_CHEAP = [0.4] * 6 + [0.8] * 18


@pytest.mark.parametrize(
    ("ctx", "mode"),
    [
        (context(NIGHT_CHEAP, 0.4, 50, 0), CHARGE_FROM_GRID),
        (context(NIGHT_CHEAP, 0.4, 50, 2500), SELF_CONSUMPTION),  # daylight
        (context(NIGHT_CHEAP, 0.8, 50, 0), SELF_CONSUMPTION),  # not the cheapest hour
        (context(NIGHT_CHEAP, 0.4, 90, 0), SELF_CONSUMPTION),  # charged enough
        (context(NIGHT_CHEAP, 0.4, None, 0), SELF_CONSUMPTION),  # charge unknown
        (context([0.5] * 24, 0.5, 50, 0), SELF_CONSUMPTION),  # one price all day
        ({**context(NIGHT_CHEAP, 0.4, 50, 0), "strategy": {"enabled": False}}, SELF_CONSUMPTION),
        ({**context(NIGHT_CHEAP, 0.4, 50, 0), "safety_lock": {"locked": True}}, SELF_CONSUMPTION),
    ],
)
def test_the_rule(ctx, mode):
    decision = decide(ctx, 5000, 180)
    assert decision["mode"] == mode
    assert decision["valid_for_s"] == 180
    if mode == CHARGE_FROM_GRID:
        assert decision["battery_setpoint_w"] == -2500
        assert decision["target_soc_percent"] == 90


@pytest.mark.integration
def test_the_simulators_coordinator_decides_and_its_battery_follows(tmp_path):
    modbus_port, coordinator_port = free_port(), free_port()
    simulator = subprocess.Popen(
        [
            sys.executable, "-m", "edge.simulator", "--port", str(modbus_port),
            "--unit-id", str(UNIT), "--at", "02:00", "--soc", "40",
            "--coordinator", f"http://127.0.0.1:{coordinator_port}",
            "--coordinator-every-s", "0.2",
        ],
        cwd=REPO,
        env=service_env(),
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    # 02:00 local: the fallback price (0.55) is the day's cheapest, its peak 0.85.
    clock = SiteClock(datetime(2026, 6, 1, 2, 0, tzinfo=UTC))
    try:
        wait_for_port(modbus_port, 15, simulator)
        with built_agent(tmp_path, modbus_port, clock, coordinator_port=coordinator_port) as agent:
            assert agent.coordinator_server is not None
            agent.coordinator_server.start()
            try:

                def charging_sample() -> dict[str, Any] | None:
                    agent.poll()
                    pending, _ = agent.buffer.pending(10_000)
                    sample: dict[str, Any] = json.loads(pending[-1][1])
                    charging = sample["battery"]["power_w"] < 0
                    optimizer = sample.get("optimizer") or {}
                    return (
                        sample if charging and optimizer.get("mode") == CHARGE_FROM_GRID else None
                    )

                sample = wait_for(charging_sample, 30, "a charging sample with the decision", 0.2)
            finally:
                agent.coordinator_server.stop()
    finally:
        stop_process(simulator)
    assert sample["optimizer"]["latest_decision"] == CHARGE_FROM_GRID
    assert "the day's cheapest" in sample["optimizer"]["reason"]
    assert sample["battery"]["power_w"] == pytest.approx(-2500, abs=1)
    assert sample["grid"]["power_w"] > 2500  # the charge comes from the grid
