"""A validated sample flattened into its `telemetry` table row, and its decision part.

The decoder flattens each sample as soon as it is validated, while its dicts are still
in the CPU cache, and drops the dicts. A batch then waits for its COPY as thousands of
flat rows instead of thousands of nested dicts, far beyond the cache, each of which was
touched again cold to build its row and again to free it (docs/benchmarks.md).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from contract.telemetry import TelemetrySample

# The columns of a telemetry row, in the order of the row and of the writer's COPY.
TELEMETRY_COLUMNS = (
    ("ts", "timestamptz"),
    ("node_id", "text"),
    ("tenant_id", "int8"),
    ("seq", "int8"),
    ("soc_percent", "float8"),
    ("battery_voltage", "float8"),
    ("battery_power_w", "float8"),
    ("solar_power_w", "float8"),
    ("grid_power_w", "float8"),
    ("load_power_w", "float8"),
    ("grid_price", "float8"),
    ("grid_mode", "text"),
    ("received_at", "timestamptz"),
)
TS, NODE_ID, TENANT_ID, SEQ = 0, 1, 2, 3

# (sample time, decision, daily savings, daily cost, grid mode) of a sample that carries
# an optimizer part.
Decision = tuple[datetime, str, float | None, float | None, str]


def telemetry_row(sample: TelemetrySample, node_id: str, received_at: datetime) -> list[Any]:
    """The sample's row in TELEMETRY_COLUMNS order. A list, because the tenant is only
    known once the writer has looked the node up: it sets `row[TENANT_ID]`."""
    battery, grid, load = sample["battery"], sample["grid"], sample.get("load")
    return [
        sample["timestamp"],
        node_id,
        None,
        sample["seq"],
        battery["soc_percent"],
        battery.get("voltage"),
        battery.get("power_w"),
        sample["solar"]["power_w"],
        grid.get("power_w"),
        load["power_w"] if load else None,
        grid["current_price"],
        grid["mode"],
        received_at,
    ]


def decision(sample: TelemetrySample) -> Decision | None:
    optimizer = sample.get("optimizer")
    if optimizer is None:
        return None
    return (
        sample["timestamp"],
        optimizer["latest_decision"],
        optimizer.get("daily_savings_pln"),
        optimizer.get("daily_cost_pln"),
        sample["grid"]["mode"],
    )
