"""The energy the agent's samples carry, against the real Modbus simulator: over polls, a
gap, a counter wrap and a restart, the samples' energies add up to what the
simulator's counters counted."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from edge.inverter import ACC32_RANGE
from edge.simulator.device import SimulatedInverter
from edge.simulator.site import Site
from tests.edge.simulated_site import UNIT, SiteClock, built_agent, modbus_server, simulated_site

pytestmark = pytest.mark.integration

NOON = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
POLL_S = 5.0


def buffered(agent) -> list[dict[str, Any]]:
    pending, _ = agent.buffer.pending(10_000)
    return [json.loads(body) for _, body in pending]


def counted(inverter) -> dict[str, float]:
    """The simulator's own (unwrapped) counters, rounded as its registers show them."""
    return {
        "pv_wh": sum(round(wh) for wh in inverter.string_wh),
        "grid_import_wh": round(inverter.grid_import_wh),
        "grid_export_wh": round(inverter.grid_export_wh),
    }


def test_the_samples_energies_add_up_to_the_simulators_counters(tmp_path):
    # A full battery: the noon surplus goes to the grid.
    with simulated_site(tmp_path, NOON, soc_percent=100.0) as (agent, inverter, clock):
        # The export counter close to the top of its range: it wraps during the test.
        inverter.grid_export_wh = ACC32_RANGE - 60.0
        assert agent.poll() is not None
        first = counted(inverter)
        for _ in range(12):
            clock.advance(POLL_S)
            assert agent.poll() is not None
        clock.advance(600)  # the agent was not polling: a gap
        assert agent.poll() is not None
        for _ in range(6):
            clock.advance(POLL_S)
            assert agent.poll() is not None
        last = counted(inverter)
        samples = buffered(agent)

    energies = [s["energy"] for s in samples]
    assert (energies[0]["interval_s"], energies[0]["covered_s"]) == (0.0, 0.0)
    assert [e["interval_s"] for e in energies[1:]] == [5.0] * 12 + [600.0] + [5.0] * 6
    assert [e["covered_s"] for e in energies[1:]] == [5.0] * 12 + [0.0] + [5.0] * 6
    for key in ("pv_wh", "grid_import_wh", "grid_export_wh"):
        # Observed and over the gap, apart: together what the counter counted.
        total = sum(e[key] + e[f"gap_{key}"] for e in energies)
        assert total == pytest.approx(last[key] - first[key], abs=1e-6), key
        assert energies[13][key] == 0.0, key  # nothing observed over the gap
    assert energies[13]["gap_pv_wh"] > 0
    assert last["grid_export_wh"] > ACC32_RANGE, "the export counter did not wrap"
    assert last["pv_wh"] - first["pv_wh"] > 500  # noon sun, including the gap
    # Load and battery come from power: nothing over the gap.
    gap = energies[13]
    assert gap["load_wh"] == gap["battery_charge_wh"] == gap["battery_discharge_wh"] == 0.0
    assert all(e["load_wh"] > 0 for e in energies[1:13])


def test_a_restart_neither_loses_nor_repeats_the_energy_across_it(tmp_path):
    clock = SiteClock(NOON)
    inverter = SimulatedInverter(Site(seed=7, soc_percent=50.0), UNIT, clock)
    with modbus_server(inverter) as port:
        with built_agent(tmp_path, port, clock) as agent:
            assert agent.poll() is not None
            first = counted(inverter)
            clock.advance(POLL_S)
            assert agent.poll() is not None
        clock.advance(8)  # the agent restarts on the same buffer
        with built_agent(tmp_path, port, clock) as again:
            assert again.poll() is not None
            last = counted(inverter)
            samples = buffered(again)
    energies = [s["energy"] for s in samples]
    assert [e["interval_s"] for e in energies] == [0.0, 5.0, 8.0]
    assert energies[2]["covered_s"] == 8.0
    for key in ("pv_wh", "grid_import_wh", "grid_export_wh"):
        assert sum(e[key] for e in energies) == pytest.approx(last[key] - first[key], abs=1e-6)
