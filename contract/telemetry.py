"""Telemetry and status payloads (seed section 2.2, plus `seq` and the power fields).

The sample's fields, their bounds and sign conventions are declared in
`contract.fields`; the sample's TypedDicts are built from that table here. Bounds on the
value fields are physical plausibility limits: a value outside them is an impossible
reading, not a schema slip, and the collector files it under its own dead-letter reason
(see `IMPLAUSIBLE_ERROR_TYPES`).

The payloads are TypedDicts validated by pydantic TypeAdapters (`TELEMETRY_SAMPLE`,
`TELEMETRY_BATCH`, `NODE_STATUS`), not BaseModels: the collector validates tens of
thousands a second, and a sample validated into plain dicts costs 3.5 us against 8.8 us
for the same checks building a model instance per nested part (docs/benchmarks.md).
Optional keys may be absent: read them with `.get()`.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, NotRequired

from pydantic import AfterValidator, ConfigDict, Field, TypeAdapter, with_config
from pydantic_core import PydanticCustomError

# pydantic needs typing_extensions' TypedDict before Python 3.12.
from typing_extensions import TypedDict

from contract.fields import (
    COVERED_S,
    ENERGIES,
    FIELDS,
    GAP_ENERGIES,
    INTERVAL_S,
    MAX_POWER_W,
    OPTIONAL_PARTS,
    PG_INTEGER_RANGES,
    NodeId,
    ShortText,
)
from contract.node_time import NodeTime
from contract.site_control import SafetyLockStatus, StrategyStatus
from contract.tunnel import TunnelStatus

# Imported from here by the settings and command contracts.
__all__ = [
    "IMPLAUSIBLE_ERROR_TYPES",
    "MAX_POWER_W",
    "MAX_SAMPLES_PER_BATCH",
    "NODE_STATUS",
    "PAYLOAD_CONFIG",
    "TELEMETRY_BATCH",
    "TELEMETRY_BATCH_SHAPE",
    "TELEMETRY_SAMPLE",
    "NodeId",
    "NodeStatus",
    "TelemetrySample",
]

MAX_SAMPLES_PER_BATCH = 1_000

# pydantic error types that mean "a number outside its physical range".
IMPLAUSIBLE_ERROR_TYPES = frozenset(
    {"greater_than_equal", "less_than_equal", "greater_than", "less_than", "finite_number"}
)

# Unknown keys are ignored so newer agents can add fields without breaking old hubs;
# NaN and infinity are not readings.
PAYLOAD_CONFIG = ConfigDict(extra="ignore", allow_inf_nan=False)

# A validated sample: nested dicts, keyed as the fields' wire paths say. Typed loosely
# because its shape is generated from `contract.fields`; code reads its parts through
# the getters generated from the same table (`collector.telemetry_row`).
TelemetrySample = dict[str, Any]


def _typed_dict(name: str, items: dict[str, Any], doc: str | None = None) -> Any:
    # The functional form, because the keys come from the table; the same schema, and so
    # the same validation speed, as a class statement.
    typed_dict = TypedDict(name, items)  # type: ignore[misc]
    typed_dict.__doc__ = doc
    return with_config(PAYLOAD_CONFIG)(typed_dict)


# Rounding slack when checking a sample's energies against its interval.
ENERGY_SLACK_WH = 1.0


def _energy_fits_interval(energy: dict[str, Any]) -> dict[str, Any]:
    """An energy part's values agree with each other: observed no longer than its interval
    lasted, and no flow more than MAX_POWER_W could carry over the time it is for (the
    observed part, or the gap) (else implausible)."""
    interval, covered = energy[INTERVAL_S.key], energy[COVERED_S.key]
    if covered > interval:
        raise PydanticCustomError(
            "less_than_equal",
            "covered_s must not exceed interval_s ({interval})",
            {"interval": interval},
        )
    for fields, seconds in ((ENERGIES, covered), (GAP_ENERGIES, interval - covered)):
        most = MAX_POWER_W * seconds / 3600 + ENERGY_SLACK_WH
        for field in fields:
            value = energy.get(field.key)
            if value is not None and value > most:
                raise PydanticCustomError(
                    "less_than_equal",
                    "{key} is more than {most} Wh could be in {seconds} s",
                    {"key": field.key, "most": round(most, 1), "seconds": seconds},
                )
    return energy


# Checks on a whole part, after its keys' own.
PART_CHECKS = {INTERVAL_S.part: _energy_fits_interval}


def _sample_type() -> Any:
    top: dict[str, Any] = {}
    parts: dict[str, dict[str, Any]] = {}
    for field in FIELDS:
        if field.wire is None:
            continue
        checked = field.checked_type
        value_type = checked if field.required else NotRequired[checked | None]
        if field.part is None:
            top[field.key] = value_type
        else:
            parts.setdefault(field.part, {})[field.key] = value_type
    for part, items in parts.items():
        part_type = _typed_dict(part.capitalize(), items)
        if part in PART_CHECKS:
            part_type = Annotated[part_type, AfterValidator(PART_CHECKS[part])]
        top[part] = NotRequired[part_type | None] if part in OPTIONAL_PARTS else part_type
    return _typed_dict(
        "TelemetrySample", top, "One reading of a site, published on `nodes/{node_id}/telemetry`."
    )


def _batch_type(name: str, sample_type: Any) -> Any:
    samples = Annotated[list[sample_type], Field(min_length=1, max_length=MAX_SAMPLES_PER_BATCH)]
    return _typed_dict(
        name,
        {"samples": samples},
        'A replay of buffered samples, oldest first: `{"samples": [...]}`.',
    )


_SAMPLE = _sample_type()
_BATCH = _batch_type("TelemetryBatch", _SAMPLE)


# A count or an age the hub stores in a bigint column.
StoredCount = Annotated[int, Field(ge=0, le=PG_INTEGER_RANGES["int8"][1])]


@with_config(PAYLOAD_CONFIG)
class NodeStatus(TypedDict):
    """Retained on `nodes/{node_id}/status`; also the node's MQTT last will."""

    state: Literal["online", "offline"]
    ts: NodeTime  # the node's clock when it said so
    agent_version: NotRequired[ShortText | None]
    # Samples waiting in the node's buffer (the heartbeat says it; the will does not).
    buffer_depth: NotRequired[StoredCount]
    # Seconds since the oldest sample still waiting for the hub's confirmation was taken
    # (absent when none waits, and from agents that predate confirmations).
    oldest_unconfirmed_age_s: NotRequired[StoredCount]
    # The remote debug tunnel (contract/tunnel.py); absent from agents that predate it.
    tunnel: NotRequired[TunnelStatus]
    # The safety lock and the dynamic strategy (contract/site_control.py); absent from
    # agents that predate them.
    safety_lock: NotRequired[SafetyLockStatus]
    strategy: NotRequired[StrategyStatus]


TELEMETRY_SAMPLE: TypeAdapter[TelemetrySample] = TypeAdapter(_SAMPLE)
TELEMETRY_BATCH: TypeAdapter[dict[str, list[TelemetrySample]]] = TypeAdapter(_BATCH)
# A batch's shape, its samples left unchecked: for a receiver that checks them one by one.
TELEMETRY_BATCH_SHAPE: TypeAdapter[dict[str, list[Any]]] = TypeAdapter(
    _batch_type("TelemetryBatchShape", Any)
)
NODE_STATUS = TypeAdapter(NodeStatus)
