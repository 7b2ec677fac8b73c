"""The agent's telemetry body, built from a reading through the field table: the same
nested JSON the seed schema and every agent already in the field send."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

from contract.telemetry import TELEMETRY_SAMPLE
from edge.agent import sample_body
from edge.inverter import Reading

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
READING = Reading(
    soc_percent=62.5,
    battery_voltage=51.2,
    battery_power_w=-400.0,
    solar_power_w=2500.0,
    grid_power_w=-900.0,
    load_power_w=1200.0,
    grid_mode="FORCE_CHARGE",
)


def test_a_full_reading_is_the_seed_schemas_nested_body():
    assert sample_body(READING, "n1", NOW, 0.55) == {
        "node_id": "n1",
        "timestamp": "2026-11-28T12:00:00+00:00",
        "battery": {"soc_percent": 62.5, "voltage": 51.2, "power_w": -400.0},
        "solar": {"power_w": 2500.0},
        "grid": {"current_price": 0.55, "mode": "FORCE_CHARGE", "power_w": -900.0},
        "load": {"power_w": 1200.0},
    }
    TELEMETRY_SAMPLE.validate_python({**sample_body(READING, "n1", NOW, 0.55), "seq": 0})


def test_missing_values_are_null_and_an_unknown_load_leaves_its_part_out():
    reading = Reading(
        soc_percent=62.5,
        battery_voltage=None,
        battery_power_w=None,
        solar_power_w=2500.0,
        grid_power_w=None,
        load_power_w=None,
        grid_mode="AUTO",
    )
    assert sample_body(reading, "n1", NOW, 0.85) == {
        "node_id": "n1",
        "timestamp": "2026-11-28T12:00:00+00:00",
        "battery": {"soc_percent": 62.5, "voltage": None, "power_w": None},
        "solar": {"power_w": 2500.0},
        "grid": {"current_price": 0.85, "mode": "AUTO", "power_w": None},
    }


def test_a_load_below_zero_from_metering_noise_is_sent_as_zero():
    reading = dataclasses.replace(READING, load_power_w=-3.0)
    assert sample_body(reading, "n1", NOW, 0.55)["load"] == {"power_w": 0.0}
