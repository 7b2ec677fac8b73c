"""A validated sample flattened into its `telemetry` table row, and its decision part.

The decoder flattens each sample as soon as it is validated, while its dicts are still
in the CPU cache, and drops the dicts. A batch then waits for its COPY as thousands of
flat rows instead of thousands of nested dicts, far beyond the cache, each of which was
touched again cold to build its row and again to free it (docs/benchmarks.md).

Both getters are compiled once, at import, from the field table (`contract.fields`):
the code a hand-written getter would be, one subscript per field, so flattening costs
no more than it did when the fields were spelled out here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from operator import itemgetter
from typing import Any

from contract.fields import (
    BATTERY_SETPOINT_W,
    DECISION,
    DECISIONS,
    MODE,
    NODE_ID,
    OPTIONAL_PARTS,
    REASON,
    RECEIVED_AT,
    SEQ,
    TARGET_SOC_PERCENT,
    TELEMETRY,
    TENANT_ID,
    TS,
    TelemetryField,
)
from contract.telemetry import TelemetrySample

# The columns of a telemetry row, in the order of the row and of the writer's COPY. A
# fixed-point field's value is already its stored integer in the row (FixedPoint), so
# rows compare with what is stored (redeliveries, conflicts.py) as the database does.
TELEMETRY_COLUMNS = tuple((f.table_column, f.table_type) for f in TELEMETRY)
TS_INDEX, NODE_ID_INDEX, TENANT_ID_INDEX, SEQ_INDEX = (
    TELEMETRY.index(f) for f in (TS, NODE_ID, TENANT_ID, SEQ)
)
# What a node reported in a sample, besides its id and the sample's time: two rows of one
# node and time hold the same sample (a redelivery) when these columns are equal.
REPORTED = tuple(f for f in TELEMETRY if f.wire is not None and f not in (NODE_ID, TS))
reported: Callable[[list[Any]], tuple[Any, ...]] = itemgetter(
    *(TELEMETRY.index(f) for f in REPORTED)
)

# A sample's optimizer part as its `optimizer_decisions` row without the node and the
# tenant, which the writer adds: a tuple of DECISION_SIGHTING_COLUMNS, the sample's time
# first (the writer sorts by it).
DECISION_SIGHTING = tuple(f for f in DECISIONS if f not in (NODE_ID, TENANT_ID))
DECISION_SIGHTING_COLUMNS = tuple(f.column for f in DECISION_SIGHTING)
# What makes a decision new: its name, or any part of the coordinator's plan (mode,
# reason, setpoints); not the running daily figures or the grid mode it reports beside.
DECISION_KEY = (DECISION, MODE, REASON, BATTERY_SETPOINT_W, TARGET_SOC_PERCENT)
DECISION_KEY_COLUMNS = tuple(f.column for f in DECISION_KEY)
decision_key: Callable[[tuple[Any, ...]], tuple[Any, ...]] = itemgetter(
    *(DECISION_SIGHTING.index(f) for f in DECISION_KEY)
)
assert DECISION_SIGHTING[0] is TS
Decision = tuple[Any, ...]


def _read(field: TelemetryField, part_checked: bool = False) -> str:
    """The expression reading `field` from `sample`, its part bound to a local of the
    part's name (`part_checked`: the code has returned already if that part is absent)."""
    assert field.wire is not None
    part, key = field.part, field.key
    container = "sample" if part is None else part
    value = f"{container}[{key!r}]" if field.required else f"{container}.get({key!r})"
    if part in OPTIONAL_PARTS and not part_checked:
        return f"({value} if {part} else None)"
    return value


def _stored(field: TelemetryField, value: str) -> str:
    """The expression of `value` (an expression) as stored in `telemetry`."""
    if field.stored is None:
        return value
    return f"(None if (v := {value}) is None else round(v * {field.stored.scale}))"


def sent(field: TelemetryField, value: Any) -> Any:
    """A value of `field` in a telemetry row, in the unit it is sent in (a fixed-point
    integer divided by its scale)."""
    if field.stored is None or field.stored.scale == 1 or value is None:
        return value
    return value / field.stored.scale


def as_sent(row: Sequence[Any]) -> dict[str, Any]:
    """A telemetry row's values by field column, as sent: what `wire_body` nests into a
    sample."""
    return {field.column: sent(field, value) for field, value in zip(TELEMETRY, row, strict=True)}


def _bind_parts(fields: Sequence[TelemetryField]) -> str:
    """Binds each part the fields read to a local of its name."""
    lines = []
    for part in dict.fromkeys(f.part for f in fields if f.part is not None):
        read = f"sample.get({part!r})" if part in OPTIONAL_PARTS else f"sample[{part!r}]"
        lines.append(f"    {part} = {read}\n")
    return "".join(lines)


def _compile(name: str, source: str, doc: str) -> Callable[..., Any]:
    namespace: dict[str, Any] = {}
    exec(compile(source, f"<{name} generated from contract.fields>", "exec"), namespace)  # noqa: S102
    getter: Callable[..., Any] = namespace[name]
    getter.__doc__ = doc
    return getter


# Columns the row getter takes as arguments: the arrival time, and the node id the
# decoder took from the topic (checked equal to the sample's first; passing it saves
# reading it again).
_ARGUMENTS = (NODE_ID, RECEIVED_AT)


def _row_source() -> str:
    # The tenant stays None until the writer has looked the node up.
    items = [
        f.column if f in _ARGUMENTS else _stored(f, _read(f)) if f.wire is not None else "None"
        for f in TELEMETRY
    ]
    return (
        f"def telemetry_row(sample, {', '.join(f.column for f in _ARGUMENTS)}):\n"
        + _bind_parts([f for f in TELEMETRY if f.wire is not None])
        + f"    return [{', '.join(items)}]\n"
    )


def _decision_source() -> str:
    optimizer = DECISION.part
    assert optimizer is not None
    return (
        "def decision(sample):\n"
        + _bind_parts([DECISION])
        + f"    if {optimizer} is None:\n"
        + "        return None\n"
        + _bind_parts([f for f in DECISION_SIGHTING if f.part != optimizer])
        + f"    return ({', '.join(_read(f, part_checked=True) for f in DECISION_SIGHTING)},)\n"
    )


telemetry_row: Callable[[TelemetrySample, str, datetime], list[Any]] = _compile(
    "telemetry_row",
    _row_source(),
    """`telemetry_row(sample, node_id, received_at)`: the sample's row in
    TELEMETRY_COLUMNS order. A list, because the tenant is only known once the writer
    has looked the node up: it sets `row[TENANT_ID_INDEX]`.""",
)
decision: Callable[[TelemetrySample], Decision | None] = _compile(
    "decision",
    _decision_source(),
    """The sample's optimizer part as a tuple of DECISION_SIGHTING_COLUMNS, or None if
    it carries none.""",
)
