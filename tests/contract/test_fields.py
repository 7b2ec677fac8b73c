"""The field table (contract/fields.py) holds together what derives from it: the edge's
body, the contract's validation, the collector's row and decision, the register map
and the reading. (The migrated tables are checked against it in
tests/timescale/test_field_columns.py.)"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from typing import Any

from collector.telemetry_row import DECISION_SIGHTING_COLUMNS, as_sent, decision, telemetry_row
from contract.fields import FIELDS, TELEMETRY, wire_body
from contract.telemetry import TELEMETRY_SAMPLE
from edge.inverter import Reading
from edge.registers import sunspec_map

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)

# A value for every field on the wire, keyed by column.
VALUES: dict[str, Any] = {
    "ts": NOW,
    "node_id": "n1",
    "seq": 7,
    "soc_percent": 62.5,
    "battery_voltage": 51.2,
    "battery_power_w": -400.0,
    "solar_power_w": 2500.0,
    "grid_power_w": -900.0,
    "load_power_w": 1200.0,
    "grid_price": 0.55,
    "grid_mode": "AUTO",
    "decision": "charge from PV",
    "daily_savings": 1.5,
    "daily_cost": 0.4,
    "mode": "SELF_CONSUMPTION",
    "reason": "PV covers the load",
    "battery_setpoint_w": -1500.0,
    "target_soc_percent": 90.0,
    "interval_s": 5.0,
    "covered_s": 5.0,
    "pv_wh": 3.5,
    "grid_import_wh": 0.0,
    "grid_export_wh": 1.25,
    "load_wh": 1.7,
    "battery_charge_wh": 0.55,
    "battery_discharge_wh": 0.0,
    "gap_pv_wh": 0.0,
    "gap_grid_import_wh": 0.0,
    "gap_grid_export_wh": 0.0,
}


def test_every_field_on_the_wire_goes_from_the_edges_body_to_its_column():
    assert set(VALUES) == {f.column for f in FIELDS if f.wire is not None}
    sample = TELEMETRY_SAMPLE.validate_python(wire_body(VALUES))
    row = telemetry_row(sample, "n1", NOW)
    assert as_sent(row) == {
        f.column: NOW if f.column == "received_at" else VALUES.get(f.column) for f in TELEMETRY
    }
    # Stored: fixed-point fields as the integers of their resolution.
    assert dict(zip((f.table_column for f in TELEMETRY), row, strict=True)) == {
        f.table_column: round(VALUES[f.column] * f.stored.scale)
        if f.stored
        else NOW
        if f.column == "received_at"
        else VALUES.get(f.column)
        for f in TELEMETRY
    }
    sighting = decision(sample)
    assert sighting is not None
    assert dict(zip(DECISION_SIGHTING_COLUMNS, sighting, strict=True)) == {
        column: VALUES[column] for column in DECISION_SIGHTING_COLUMNS
    }


def test_names_are_unique_on_the_wire_in_the_tables_and_in_the_aggregates():
    wires = [f.wire for f in FIELDS if f.wire is not None]
    assert len(wires) == len(set(wires))
    columns = [f.column for f in FIELDS]
    assert len(columns) == len(set(columns))
    aggregates = [a.column or f.column for f in TELEMETRY for a in f.aggregates]
    assert len(aggregates) == len(set(aggregates))


def test_every_sunspec_source_is_a_point_of_the_register_map():
    models = sunspec_map().models
    points = [p for f in FIELDS for p in f.sunspec]
    assert points
    for model, name in points:
        model_map = models[model]
        block = model_map.repeating.points if model_map.repeating else {}
        assert name in model_map.points or name in block, (model, name)


def test_a_reading_holds_exactly_the_fields_read_from_the_device():
    # Beside them, the lifetime energy counters each sample's energy is measured from.
    read = [f.name for f in dataclasses.fields(Reading) if not f.name.endswith("_counter")]
    assert read == [f.column for f in FIELDS if f.sunspec]
