"""Telemetry and status payloads (seed section 2.2, plus `seq` and the power fields).

Sign conventions, seen from the site's AC bus:
- `grid.power_w`: + import from the grid, - export to it;
- `battery.power_w`: + discharging into the site, - charging;
- `solar.power_w` and `load.power_w`: >= 0.
So `load = solar + grid + battery` on a well-measured site.

Bounds on the value fields are physical plausibility limits for a home system: a value
outside them is an impossible reading, not a schema slip, and the collector files it
under its own dead-letter reason (see `IMPLAUSIBLE_ERROR_TYPES`).

The payloads are TypedDicts validated by pydantic TypeAdapters (`TELEMETRY_SAMPLE`,
`TELEMETRY_BATCH`, `NODE_STATUS`), not BaseModels: the collector validates tens of
thousands a second, and a sample validated into plain dicts costs 3.5 us against 8.8 us
for the same checks building a model instance per nested part (docs/benchmarks.md).
Optional keys may be absent: read them with `.get()`.
"""

from __future__ import annotations

from typing import Annotated, Literal, NotRequired

from pydantic import AwareDatetime, ConfigDict, Field, StringConstraints, TypeAdapter, with_config

# pydantic needs typing_extensions' TypedDict before Python 3.12.
from typing_extensions import TypedDict

from contract.topics import NODE_ID_PATTERN

MAX_POWER_W = 100_000.0
MAX_BATTERY_VOLTAGE = 1_500.0
MAX_ABS_PRICE_PER_KWH = 100.0
MAX_SAMPLES_PER_BATCH = 1_000

NodeId = Annotated[str, StringConstraints(pattern=NODE_ID_PATTERN)]
PowerW = Annotated[float, Field(ge=-MAX_POWER_W, le=MAX_POWER_W)]
NonNegativePowerW = Annotated[float, Field(ge=0, le=MAX_POWER_W)]
ShortText = Annotated[str, StringConstraints(max_length=64)]

# pydantic error types that mean "a number outside its physical range".
IMPLAUSIBLE_ERROR_TYPES = frozenset(
    {"greater_than_equal", "less_than_equal", "greater_than", "less_than", "finite_number"}
)

# Unknown keys are ignored so newer agents can add fields without breaking old hubs;
# NaN and infinity are not readings.
PAYLOAD_CONFIG = ConfigDict(extra="ignore", allow_inf_nan=False)


@with_config(PAYLOAD_CONFIG)
class Battery(TypedDict):
    soc_percent: Annotated[float, Field(ge=0, le=100)]
    voltage: NotRequired[Annotated[float, Field(ge=0, le=MAX_BATTERY_VOLTAGE)] | None]
    power_w: NotRequired[PowerW | None]


@with_config(PAYLOAD_CONFIG)
class Solar(TypedDict):
    power_w: NonNegativePowerW


@with_config(PAYLOAD_CONFIG)
class Grid(TypedDict):
    current_price: Annotated[float, Field(ge=-MAX_ABS_PRICE_PER_KWH, le=MAX_ABS_PRICE_PER_KWH)]
    mode: ShortText
    power_w: NotRequired[PowerW | None]


@with_config(PAYLOAD_CONFIG)
class Load(TypedDict):
    power_w: NonNegativePowerW


@with_config(PAYLOAD_CONFIG)
class Optimizer(TypedDict):
    latest_decision: Annotated[str, StringConstraints(max_length=500)]
    daily_savings_pln: NotRequired[float | None]
    daily_cost_pln: NotRequired[float | None]


@with_config(PAYLOAD_CONFIG)
class TelemetrySample(TypedDict):
    """One reading of a site, published on `nodes/{node_id}/telemetry`."""

    node_id: NodeId
    timestamp: AwareDatetime
    seq: Annotated[int, Field(ge=0)]
    battery: Battery
    solar: Solar
    grid: Grid
    load: NotRequired[Load | None]
    optimizer: NotRequired[Optimizer | None]


@with_config(PAYLOAD_CONFIG)
class TelemetryBatch(TypedDict):
    """A replay of buffered samples, oldest first: `{"samples": [...]}`."""

    samples: Annotated[list[TelemetrySample], Field(min_length=1, max_length=MAX_SAMPLES_PER_BATCH)]


@with_config(PAYLOAD_CONFIG)
class NodeStatus(TypedDict):
    """Retained on `nodes/{node_id}/status`; also the node's MQTT last will."""

    state: Literal["online", "offline"]
    ts: AwareDatetime
    agent_version: NotRequired[ShortText | None]


TELEMETRY_SAMPLE = TypeAdapter(TelemetrySample)
TELEMETRY_BATCH = TypeAdapter(TelemetryBatch)
NODE_STATUS = TypeAdapter(NodeStatus)
