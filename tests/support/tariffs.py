"""Tariffs and energy-carrying samples written straight into the database, for tests of
the analytics (the control API's tariff routes are tested on their own)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import date
from typing import Any

from contract.fields import TELEMETRY
from contract.tariff import TariffVersion

# A sample's columns as the tests give them, energy part included (contract/fields.py).
SAMPLE_COLUMNS = (
    ("ts", "timestamptz"),
    ("node_id", "text"),
    ("tenant_id", "bigint"),
    ("seq", "bigint"),
    ("soc_percent", "float8"),
    ("battery_power_w", "float8"),
    ("solar_power_w", "float8"),
    ("grid_power_w", "float8"),
    ("load_power_w", "float8"),
    ("grid_price", "float8"),
    ("grid_mode", "text"),
    ("interval_s", "float8"),
    ("covered_s", "float8"),
    ("pv_wh", "float8"),
    ("grid_import_wh", "float8"),
    ("grid_export_wh", "float8"),
    ("load_wh", "float8"),
    ("battery_charge_wh", "float8"),
    ("battery_discharge_wh", "float8"),
    ("gap_pv_wh", "float8"),
    ("gap_grid_import_wh", "float8"),
    ("gap_grid_export_wh", "float8"),
)
# Stored as the collector stores them: fixed-point fields as their integers (FixedPoint);
# before migration 0026, all as sent.
_FIELDS = {f.column: f for f in TELEMETRY}
INSERT_SAMPLES = (
    f"INSERT INTO telemetry ({', '.join(_FIELDS[c].table_column for c, _ in SAMPLE_COLUMNS)})"
    " SELECT "
    + ", ".join(
        f"round({c} * {stored.scale})" if (stored := _FIELDS[c].stored) else c
        for c, _ in SAMPLE_COLUMNS
    )
    + f" FROM unnest({', '.join(f'%s::{t}[]' for _, t in SAMPLE_COLUMNS)})"
    + f" AS u({', '.join(c for c, _ in SAMPLE_COLUMNS)})"
)
INSERT_SAMPLES_BEFORE_0026 = (
    f"INSERT INTO telemetry ({', '.join(c for c, _ in SAMPLE_COLUMNS)})"
    f" SELECT * FROM unnest({', '.join(f'%s::{t}[]' for _, t in SAMPLE_COLUMNS)})"
)


def insert_samples(conn: Any, rows: Sequence[tuple[Any, ...]], *, fixed_point: bool = True) -> None:
    """Rows of SAMPLE_COLUMNS, in that order (`fixed_point` False: into a schema before
    migration 0026)."""
    statement = INSERT_SAMPLES if fixed_point else INSERT_SAMPLES_BEFORE_0026
    conn.execute(statement, [list(col) for col in zip(*rows, strict=True)])


def sample_row(
    ts: Any,
    node_id: str,
    tenant_id: int,
    seq: int,
    *,
    soc: float,
    battery_w: float,
    pv_w: float,
    grid_w: float,
    load_w: float,
    interval_s: float,
    covered_s: float,
    gap: tuple[float | None, float | None, float | None] = (None, None, None),
) -> tuple[Any, ...]:
    """A sample whose energies are its powers held over `covered_s`, to the mWh (as the
    agent counts them from power: edge/energy_meter.py), split by sign as the field table
    says; `gap`:
    what counters counted over a gap before it (PV, import, export Wh)."""
    hours = covered_s / 3600
    return (
        ts,
        node_id,
        tenant_id,
        seq,
        soc,
        battery_w,
        pv_w,
        grid_w,
        load_w,
        0.0,
        "AUTO",
        interval_s,
        covered_s,
        *(
            round(wh, 3)  # to the mWh, as edge/energy_meter.py sends them
            for wh in (
                pv_w * hours,
                max(grid_w, 0) * hours,
                max(-grid_w, 0) * hours,
                load_w * hours,
                max(-battery_w, 0) * hours,
                max(battery_w, 0) * hours,
            )
        ),
        *gap,
    )


def flat_tariff(
    valid_from: date,
    import_price: float,
    export_price: float,
    *,
    currency: str = "PLN",
    periods: Sequence[dict[str, Any]] = (),
) -> TariffVersion:
    """A tariff version: `import_price` but where `periods` say, one export price."""
    return TariffVersion.model_validate(
        {
            "valid_from": valid_from,
            "currency": currency,
            "import_price": {
                "default_price": import_price,
                "default_name": "standard",
                "periods": list(periods),
            },
            "export_price": {"default_price": export_price},
        }
    )


def insert_tariff(
    conn: Any, tenant_id: int, version: TariffVersion, node_id: str | None = None
) -> None:
    """Stores a version as the control API does: as given, and its price grids."""
    conn.execute(
        "INSERT INTO tariffs (tenant_id, node_id, valid_from, currency, tariff, import_prices,"
        " export_prices, import_periods) VALUES (%s, %s, %s, %s, %s::jsonb, %s, %s, %s)",
        (
            tenant_id,
            node_id,
            version.valid_from,
            version.currency,
            json.dumps(version.model_dump(mode="json", exclude={"valid_from"})),
            version.import_grid(),
            version.export_grid(),
            version.import_period_names(),
        ),
    )


def set_time_zone(conn: Any, tenant_id: int, zone: str) -> None:
    conn.execute("UPDATE tenants SET timezone = %s WHERE id = %s", (zone, tenant_id))
