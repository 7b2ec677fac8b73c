"""Every telemetry field, declared once: where it sits in the MQTT sample, the column it
is stored in, its unit, type and bounds, how the continuous aggregates roll it up, and
where its value comes from (a SunSpec point, a derivation, the agent, the collector).

Everything else derives from this table instead of spelling the fields out again:
- the edge agent nests a reading into the wire body with `wire_body()`;
- `contract.telemetry` builds the sample's validation (TypedDicts) from `FIELDS`;
- `collector.telemetry_row` compiles the row and decision getters from `TELEMETRY` and
  `DECISIONS`, and the writer's COPY column list comes from there;
- `grafana.dashboards` names columns through the constants below;
- the migrations stay frozen snapshots, and tests/timescale/test_field_columns.py checks
  that the `telemetry` table, each continuous aggregate and `optimizer_decisions` have
  exactly the columns this table says.

Names change on the way only here: a field's `wire` path is what agents send (kept as
the seed schema named it, so agents in the field keep working) and its `column` is
what it is stored and queried as (`grid.current_price` -> `grid_price`,
`battery.voltage` -> `battery_voltage`, `optimizer.daily_savings_pln` ->
`daily_savings`, `timestamp` -> `ts`).

Sign conventions, seen from the site's AC bus: `grid_power_w` + import, - export;
`battery_power_w` + discharging into the site, - charging; solar and load >= 0; so
`load = solar + grid + battery` on a well-measured site. Bounds are physical
plausibility limits for a home system: a value outside them is an impossible reading,
which the collector files under its own dead-letter reason.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Any, NamedTuple, get_args

from pydantic import AwareDatetime, Field, StringConstraints

from contract.topics import NODE_ID_PATTERN

MAX_POWER_W = 100_000.0
MAX_BATTERY_VOLTAGE = 1_500.0
MAX_ABS_PRICE_PER_KWH = 100.0

NodeId = Annotated[str, StringConstraints(pattern=NODE_ID_PATTERN)]
PowerW = Annotated[float, Field(ge=-MAX_POWER_W, le=MAX_POWER_W)]
NonNegativePowerW = Annotated[float, Field(ge=0, le=MAX_POWER_W)]
ShortText = Annotated[str, StringConstraints(max_length=64)]

# What each PostgreSQL integer type holds (named as psycopg's binary COPY names it). An
# integer on the wire is checked against its column's range: one that the column cannot
# hold would pass validation and then fail the write of its whole batch.
PG_INTEGER_RANGES = {
    "int2": (-(2**15), 2**15 - 1),
    "int4": (-(2**31), 2**31 - 1),
    "int8": (-(2**63), 2**63 - 1),
}

# Parts of the sample an agent may leave out or send as null: a site without a load
# reading, an agent without an optimizer, an agent that predates energy accounting.
OPTIONAL_PARTS = frozenset({"load", "optimizer", "energy"})

# The longest span one sample's energy may cover: a device's counters read again after
# the agent was down (its buffer keeps 8 days).
MAX_ENERGY_INTERVAL_S = 8 * 24 * 3600.0
# The most energy one flow can carry in that span at MAX_POWER_W.
MAX_ENERGY_WH = MAX_POWER_W * MAX_ENERGY_INTERVAL_S / 3600


# The continuous aggregates, finer first (each rolls up the one before it). They hold
# integers (mWh, ms, 0.1 % of SOC, whole W) behind plain views named without `_fixed`
# (`telemetry_5m`...), which show the aggregate columns below in their units; readers
# read the views, a refresh names these (migration 0026).
CONTINUOUS_AGGREGATES = ("telemetry_5m_fixed", "telemetry_1h_fixed", "telemetry_1d_fixed")


class Rollup(StrEnum):
    """How an aggregate column is computed in `telemetry_5m` and rolled up into
    `telemetry_1h` and `telemetry_1d`."""

    BUCKET = "bucket"  # time_bucket() of the sample time: 5 minutes, 1 hour, 1 day
    KEY = "key"  # grouped by
    COUNT = "count"  # samples in the bucket; summed up the hierarchy
    # avg(); the coarser aggregates weight the finer means by their sample counts
    MEAN = "mean"
    MIN = "min"
    MAX = "max"
    # kWh: the sum of the samples' energies (each sample's `energy` part, in Wh, covers
    # the time since the sample before it); summed up the hierarchy.
    ENERGY = "energy"
    # Seconds of the bucket the samples' energies were observed over; summed up the
    # hierarchy. Divided by the bucket's length, it is the bucket's data coverage.
    COVERAGE = "coverage"


@dataclass(frozen=True, slots=True)
class Aggregate:
    """One column of the continuous aggregates. `column` None: the field's own column
    name (its mean is stored under the name of what it averages)."""

    rollup: Rollup
    column: str | None = None
    of: str = ""  # what exactly, when the rollup alone does not say


class Point(NamedTuple):
    """A SunSpec point: its model id and its name in edge/sunspec.yaml."""

    model: int
    name: str


@dataclass(frozen=True, slots=True)
class FixedPoint:
    """How a float field is stored in `telemetry`: as the integer of its resolution,
    `round(value * scale)` (a float whose mantissa is full, such as 5.004 s or 3.459 Wh,
    compresses to ~7 bytes; the same value in ms or mWh to 1-2: docs/benchmarks.md,
    "Storage per site")."""

    column: str  # its column in `telemetry`, named for its unit (`pv_mwh`, `solar_w`)
    pg_type: str  # int4 or int8, as psycopg's binary COPY names it
    scale: int  # stored units per `unit` (1000: Wh -> mWh)


@dataclass(frozen=True, slots=True)
class TelemetryField:
    """One field of a telemetry sample and of the tables it is stored in."""

    # Its key wherever a sample is flat (the edge's readings, node_status), and its column
    # in `optimizer_decisions` and in `telemetry` unless `stored` names another.
    column: str
    wire: str | None  # dotted path in the MQTT sample; None: stamped by the collector
    wire_type: Any  # the type on the wire, with its bounds (pydantic)
    pg_type: str  # its type as sent, where it is stored so (psycopg's binary COPY names)
    unit: str  # "" for none
    source: str  # where its value comes from
    required: bool = True  # on the wire; an optional key may be absent or null
    sunspec: tuple[Point, ...] = ()  # the SunSpec points the edge reads it from
    aggregates: tuple[Aggregate, ...] = ()
    stored: FixedPoint | None = None  # in `telemetry` as an integer (migration 0026)

    @property
    def table_column(self) -> str:
        """Its column in `telemetry`."""
        return self.stored.column if self.stored else self.column

    @property
    def table_type(self) -> str:
        """Its type in `telemetry`, as psycopg's binary COPY names it."""
        return self.stored.pg_type if self.stored else self.pg_type

    @property
    def checked_type(self) -> Any:
        """`wire_type` as a receiver validates it: an integer is also bounded to what its
        column's type holds (PG_INTEGER_RANGES), so a value the column cannot store is
        refused as implausible. The wire type's own bounds are applied after the
        column's and override them: they must lie within the column's range. (A
        fixed-point field's bounds are within its column's range: test_field_columns.)"""
        column_range = PG_INTEGER_RANGES.get(self.pg_type)
        if column_range is None or self.wire is None:
            return self.wire_type
        base, *declared = get_args(self.wire_type) or (self.wire_type,)
        lowest, highest = column_range
        return Annotated[(base, Field(ge=lowest, le=highest), *declared)]

    @property
    def part(self) -> str | None:
        """The sample part it sits in (`battery`), None for a top-level key."""
        if self.wire is None or "." not in self.wire:
            return None
        return self.wire.split(".", 1)[0]

    @property
    def key(self) -> str:
        """Its key within its part (or within the sample, for a top-level field)."""
        assert self.wire is not None, f"{self.column} is not on the wire"
        return self.wire.rsplit(".", 1)[-1]


# -- Aggregate columns named apart from their field (a MEAN keeps the field's name) --------

BUCKET = Aggregate(Rollup.BUCKET, "bucket")
SAMPLE_COUNT = Aggregate(Rollup.COUNT, "sample_count")
SOC_AVG = Aggregate(Rollup.MEAN, "soc_avg")
SOC_MIN = Aggregate(Rollup.MIN, "soc_min")
SOC_MAX = Aggregate(Rollup.MAX, "soc_max")
PV_KWH = Aggregate(Rollup.ENERGY, "pv_kwh")
GRID_IMPORT_KWH = Aggregate(Rollup.ENERGY, "grid_import_kwh")
GRID_EXPORT_KWH = Aggregate(Rollup.ENERGY, "grid_export_kwh")
LOAD_KWH = Aggregate(Rollup.ENERGY, "load_kwh")
BATTERY_CHARGE_KWH = Aggregate(Rollup.ENERGY, "battery_charge_kwh")
BATTERY_DISCHARGE_KWH = Aggregate(Rollup.ENERGY, "battery_discharge_kwh")
GAP_PV_KWH = Aggregate(Rollup.ENERGY, "gap_pv_kwh")
GAP_GRID_IMPORT_KWH = Aggregate(Rollup.ENERGY, "gap_grid_import_kwh")
GAP_GRID_EXPORT_KWH = Aggregate(Rollup.ENERGY, "gap_grid_export_kwh")

MEAN = Aggregate(Rollup.MEAN)
COVERAGE = Aggregate(Rollup.COVERAGE)
KEY = Aggregate(Rollup.KEY)

# -- The fields ------------------------------------------------------------------------------

TS = TelemetryField(
    "ts",
    "timestamp",
    AwareDatetime,
    "timestamptz",
    "",
    "the agent's clock when it polled the device",
    aggregates=(BUCKET, SAMPLE_COUNT),
)
NODE_ID = TelemetryField(
    "node_id",
    "node_id",
    NodeId,
    "text",
    "",
    "the agent's settings; the collector refuses one that differs from the topic's",
    aggregates=(KEY,),
)
TENANT_ID = TelemetryField(
    "tenant_id",
    None,
    None,
    "int8",
    "",
    "collector: the node's tenant, looked up when the batch is written",
    aggregates=(KEY,),
)
SEQ = TelemetryField(
    "seq",
    "seq",
    Annotated[int, Field(ge=0)],
    "int8",
    "",
    "the agent's buffer: per node, monotonic, kept across restarts",
)
SOC_PERCENT = TelemetryField(
    "soc_percent",
    "battery.soc_percent",
    Annotated[float, Field(ge=0, le=100)],
    "float8",
    "%",
    "SunSpec storage ChaState",
    sunspec=(Point(124, "ChaState"),),
    aggregates=(SOC_AVG, SOC_MIN, SOC_MAX),
)
BATTERY_VOLTAGE = TelemetryField(
    "battery_voltage",
    "battery.voltage",
    Annotated[float, Field(ge=0, le=MAX_BATTERY_VOLTAGE)],
    "float8",
    "V",
    "SunSpec storage InBatV",
    required=False,
    sunspec=(Point(124, "InBatV"),),
    stored=FixedPoint("battery_voltage_mv", "int4", 1000),
)
BATTERY_POWER_W = TelemetryField(
    "battery_power_w",
    "battery.power_w",
    PowerW,
    "float8",
    "W",
    "derived: inverter AC power minus PV power (a hybrid inverter's AC side carries both)",
    required=False,
    sunspec=(Point(103, "W"), Point(101, "W")),
    aggregates=(MEAN,),
    # Whole watts: what a meter's or an inverter's register resolves.
    stored=FixedPoint("battery_w", "int4", 1),
)
SOLAR_POWER_W = TelemetryField(
    "solar_power_w",
    "solar.power_w",
    NonNegativePowerW,
    "float8",
    "W",
    "the MPPT strings' DCW summed, else the inverter's DCW",
    sunspec=(Point(160, "DCW"), Point(103, "DCW"), Point(101, "DCW")),
    aggregates=(MEAN,),
    stored=FixedPoint("solar_w", "int4", 1),
)
GRID_POWER_W = TelemetryField(
    "grid_power_w",
    "grid.power_w",
    PowerW,
    "float8",
    "W",
    "the first meter model's W (201-204)",
    required=False,
    sunspec=(Point(201, "W"), Point(202, "W"), Point(203, "W"), Point(204, "W")),
    aggregates=(MEAN,),
    stored=FixedPoint("grid_w", "int4", 1),
)
LOAD_POWER_W = TelemetryField(
    "load_power_w",
    "load.power_w",
    NonNegativePowerW,
    "float8",
    "W",
    "derived: inverter AC power plus grid power, floored at 0 by the agent",
    sunspec=(Point(103, "W"), Point(101, "W")),
    aggregates=(MEAN,),
    stored=FixedPoint("load_w", "int4", 1),
)
GRID_PRICE = TelemetryField(
    "grid_price",
    "grid.current_price",
    Annotated[float, Field(ge=-MAX_ABS_PRICE_PER_KWH, le=MAX_ABS_PRICE_PER_KWH)],
    "float8",
    "currency/kWh",
    "the agent's copy of its site's tariff (contract/tariff.py): the import price now;"
    " the hub's analytics price energy with the hub's own tariffs",
)
GRID_MODE = TelemetryField(
    "grid_mode",
    "grid.mode",
    ShortText,
    "text",
    "",
    "SunSpec storage StorCtl_Mod: 1 FORCE_CHARGE, 2 DISCHARGE, else AUTO",
    sunspec=(Point(124, "StorCtl_Mod"),),
)
RECEIVED_AT = TelemetryField(
    "received_at",
    None,
    None,
    "timestamptz",
    "",
    "collector: when the message arrived",
)
DECISION = TelemetryField(
    "decision",
    "optimizer.latest_decision",
    Annotated[str, StringConstraints(max_length=500)],
    "text",
    "",
    "the site's optimizer, when it runs one",
)
DAILY_SAVINGS = TelemetryField(
    "daily_savings",
    "optimizer.daily_savings_pln",
    float,
    "float8",
    "PLN",
    "the site's optimizer: its savings so far today",
    required=False,
)
DAILY_COST = TelemetryField(
    "daily_cost",
    "optimizer.daily_cost_pln",
    float,
    "float8",
    "PLN",
    "the site's optimizer: its cost so far today",
    required=False,
)


# -- A sample's energy: what flowed since the sample before it ------------------------------
# The agent takes each from the device's cumulative counters when it has them (a counter's
# increase since the previous sample, resets and wraps handled), otherwise from power
# weighted by the time the sample covers (edge/energy_meter.py). Absent from agents that
# predate energy accounting: their samples count for means, not for energy.

EnergyWh = Annotated[float, Field(ge=0, le=MAX_ENERGY_WH)]
EnergySeconds = Annotated[float, Field(ge=0, le=MAX_ENERGY_INTERVAL_S)]

INTERVAL_S = TelemetryField(
    "interval_s",
    "energy.interval_s",
    EnergySeconds,
    "float8",
    "s",
    "the agent: time since the sample before it, which its energies span",
    stored=FixedPoint("interval_ms", "int4", 1000),
)
COVERED_S = TelemetryField(
    "covered_s",
    "energy.covered_s",
    EnergySeconds,
    "float8",
    "s",
    "the agent: the part of interval_s the site was observed over (0 after a gap"
    " longer than a few poll intervals); at most interval_s",
    aggregates=(COVERAGE,),
    stored=FixedPoint("covered_ms", "int4", 1000),
)


def _energy(column: str, wire: str, source: str, aggregate: Aggregate) -> TelemetryField:
    return TelemetryField(
        column,
        f"energy.{wire}",
        EnergyWh,
        "float8",
        "Wh",
        source,
        required=False,
        aggregates=(aggregate,),
        # mWh: edge/energy_meter.py rounds energies to 3 decimals of a Wh.
        stored=FixedPoint(f"{column.removesuffix('_wh')}_mwh", "int8", 1000),
    )


PV_WH = _energy(
    "pv_wh", "pv_wh", "the MPPT modules' DCWH counters, else solar power x covered_s", PV_KWH
)
GRID_IMPORT_WH = _energy(
    "grid_import_wh",
    "grid_import_wh",
    "the meter's TotWhImp counter, else grid power's import part x covered_s",
    GRID_IMPORT_KWH,
)
GRID_EXPORT_WH = _energy(
    "grid_export_wh",
    "grid_export_wh",
    "the meter's TotWhExp counter, else grid power's export part x covered_s",
    GRID_EXPORT_KWH,
)
LOAD_WH = _energy("load_wh", "load_wh", "load power x covered_s", LOAD_KWH)
BATTERY_CHARGE_WH = _energy(
    "battery_charge_wh",
    "battery_charge_wh",
    "battery power's charging part x covered_s",
    BATTERY_CHARGE_KWH,
)
BATTERY_DISCHARGE_WH = _energy(
    "battery_discharge_wh",
    "battery_discharge_wh",
    "battery power's discharging part x covered_s",
    BATTERY_DISCHARGE_KWH,
)
# What flowed while the site was observed (covered_s): what the money is computed from.
ENERGIES = (PV_WH, GRID_IMPORT_WH, GRID_EXPORT_WH, LOAD_WH, BATTERY_CHARGE_WH, BATTERY_DISCHARGE_WH)

# What a device's counters say flowed over a gap (interval_s - covered_s: the agent or
# the inverter was down): real energy, on the meter and the bill, but when within the
# gap it flowed is unknown, and nothing says what the house used meanwhile; so it is
# kept apart, summed but never priced (docs/energy-and-money.md).
GAP_PV_WH = _energy(
    "gap_pv_wh", "gap_pv_wh", "the MPPT modules' DCWH counters' increase over a gap", GAP_PV_KWH
)
GAP_GRID_IMPORT_WH = _energy(
    "gap_grid_import_wh",
    "gap_grid_import_wh",
    "the meter's TotWhImp counter's increase over a gap",
    GAP_GRID_IMPORT_KWH,
)
GAP_GRID_EXPORT_WH = _energy(
    "gap_grid_export_wh",
    "gap_grid_export_wh",
    "the meter's TotWhExp counter's increase over a gap",
    GAP_GRID_EXPORT_KWH,
)
GAP_ENERGIES = (GAP_PV_WH, GAP_GRID_IMPORT_WH, GAP_GRID_EXPORT_WH)

# -- The site coordinator's decision (edge: the coordinator interface) ----------------------

MODE = TelemetryField(
    "mode",
    "optimizer.mode",
    ShortText,
    "text",
    "",
    "the site's coordinator: the mode it runs the site in (e.g. SELF_CONSUMPTION)",
    required=False,
)
REASON = TelemetryField(
    "reason",
    "optimizer.reason",
    Annotated[str, StringConstraints(max_length=500)],
    "text",
    "",
    "the site's coordinator: why",
    required=False,
)
BATTERY_SETPOINT_W = TelemetryField(
    "battery_setpoint_w",
    "optimizer.battery_setpoint_w",
    PowerW,
    "float8",
    "W",
    "the site's coordinator: the battery power it plans (+ discharge, - charge)",
    required=False,
)
TARGET_SOC_PERCENT = TelemetryField(
    "target_soc_percent",
    "optimizer.target_soc_percent",
    Annotated[float, Field(ge=0, le=100)],
    "float8",
    "%",
    "the site's coordinator: the state of charge it plans to reach",
    required=False,
)

# The `telemetry` table's columns, in its order.
TELEMETRY = (
    TS,
    NODE_ID,
    TENANT_ID,
    SEQ,
    SOC_PERCENT,
    BATTERY_VOLTAGE,
    BATTERY_POWER_W,
    SOLAR_POWER_W,
    GRID_POWER_W,
    LOAD_POWER_W,
    GRID_PRICE,
    GRID_MODE,
    RECEIVED_AT,
    INTERVAL_S,
    COVERED_S,
    *ENERGIES,
    *GAP_ENERGIES,
)
# Before migration 0026 `telemetry` stored the fixed-point fields as sent (float8), in
# columns of their own name: they stay, NULL in rows written since, and the aggregates
# read them for the rows written before it until raw retention has dropped those rows.
LEGACY_COLUMNS = tuple(f.column for f in TELEMETRY if f.stored)

# What `node_status` keeps of each node's newest sample (its `latest_ts` beside): the
# values "now" panels show (migration 0015).
LATEST = (SOC_PERCENT, BATTERY_POWER_W, SOLAR_POWER_W, GRID_POWER_W, LOAD_POWER_W, GRID_MODE)

# The `optimizer_decisions` table's columns, in its order: a sample's optimizer part,
# stored only when its decision changes, beside the sample's time and grid mode.
DECISIONS = (
    TS,
    NODE_ID,
    TENANT_ID,
    DECISION,
    GRID_MODE,
    DAILY_SAVINGS,
    DAILY_COST,
    MODE,
    REASON,
    BATTERY_SETPOINT_W,
    TARGET_SOC_PERCENT,
)
# Every field once, in the sample's order.
FIELDS = tuple(dict.fromkeys(TELEMETRY + DECISIONS))


def wire_body(values: Mapping[str, Any]) -> dict[str, Any]:
    """The sample's nested wire form of `values` (column name -> value), for the fields
    they name: a part with every key of it that is given, None included; an optional
    part (OPTIONAL_PARTS) only if one of its values is not None."""
    body: dict[str, Any] = {}
    for field in FIELDS:
        if field.wire is None or field.column not in values:
            continue
        value = values[field.column]
        part = field.part
        if part is None:
            body[field.key] = value
        else:
            body.setdefault(part, {})[field.key] = value
    for part in OPTIONAL_PARTS & body.keys():
        if all(v is None for v in body[part].values()):
            del body[part]
    return body
