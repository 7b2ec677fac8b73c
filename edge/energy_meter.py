"""Each sample's energy: what flowed since the sample before it (the sample's `energy`
part, contract/fields.py), in Wh.

- `interval_s`: time since the previous sample; `covered_s`: the same when that is at
  most `max_gap_s` (a few poll intervals), else 0 (the site was not observed between).
  The first sample (and one after a clock step back, or after more than the contract's
  longest interval) starts afresh: both 0, its energies 0.
- PV, grid import and grid export come from the device's lifetime counters when it has
  them: a counter's increase since the previous sample. Over a gap (covered_s 0) the
  increase goes to the flow's `gap_*` field instead (the device counted it, and so does
  the homeowner's bill, but when within the gap it flowed is unknown). A counter that
  went down wrapped when the increase that implies could have flowed in the interval (it
  was near the top of its range); else it was reset (a device replaced) and, like an
  increase no device could have made in the interval, that interval falls back to power;
  so does a counter whose steps are coarser than a flow could carry in the interval. A
  device may update a counter's register less often than it is polled (every 30 or 60
  s): the polls in between count nothing, and the increase that follows is judged over
  the time since that counter last changed (up to MAX_COUNTER_UPDATE_S), not one poll.
- Otherwise from power: the trapezoid of the two samples' powers over `covered_s` (so
  nothing across a gap). Load, battery charge (- battery power) and discharge (+), grid
  import (+ grid power) and export (-) split by sign.
- A flow the device does not measure (no meter, no battery) is None.

The previous sample's point is persisted with each sample (edge/buffer.py keeps it in
the same transaction), so a restart neither loses nor counts twice the energy across it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from contract.fields import (
    BATTERY_CHARGE_WH,
    BATTERY_DISCHARGE_WH,
    COVERED_S,
    GAP_GRID_EXPORT_WH,
    GAP_GRID_IMPORT_WH,
    GAP_PV_WH,
    GRID_EXPORT_WH,
    GRID_IMPORT_WH,
    INTERVAL_S,
    LOAD_WH,
    MAX_ENERGY_INTERVAL_S,
    MAX_POWER_W,
    PV_WH,
)
from contract.telemetry import ENERGY_SLACK_WH
from edge.inverter import Counter, Reading

SECONDS_PER_HOUR = 3600.0
# Wh kept on the wire: a milliwatt-hour.
DIGITS = 3


@dataclass(frozen=True)
class MeterPoint:
    """What one sample's energy is measured from: its time, powers (W, the contract's
    signs) and counters (Wh). Persisted as JSON between samples."""

    at: datetime
    solar_power_w: float | None
    grid_power_w: float | None
    battery_power_w: float | None
    load_power_w: float | None
    pv_counter: Counter | None
    grid_import_counter: Counter | None
    grid_export_counter: Counter | None
    # When each counter (by attribute name) was first read at its value, if before `at`:
    # the register had not changed since.
    counter_since: dict[str, datetime] = field(default_factory=dict)

    def since(self, counter: str) -> datetime:
        return self.counter_since.get(counter, self.at)

    @classmethod
    def of(cls, reading: Reading, at: datetime) -> MeterPoint:
        return cls(
            at,
            reading.solar_power_w,
            reading.grid_power_w,
            reading.battery_power_w,
            None if reading.load_power_w is None else max(0.0, reading.load_power_w),
            reading.pv_counter,
            reading.grid_import_counter,
            reading.grid_export_counter,
        )

    def to_json(self) -> str:
        since = {name: at.isoformat() for name, at in self.counter_since.items()}
        return json.dumps({**asdict(self), "at": self.at.isoformat(), "counter_since": since})

    @classmethod
    def from_json(cls, text: str) -> MeterPoint:
        """Raises ValueError (or KeyError, TypeError) on a malformed one."""
        data = json.loads(text)
        at = datetime.fromisoformat(data["at"])
        if at.tzinfo is None:
            raise ValueError("a naive time")

        def power(key: str) -> float | None:
            return None if data[key] is None else float(data[key])

        def counter(key: str) -> Counter | None:
            value = data[key]
            if value is None:
                return None
            return Counter(float(value["wh"]), float(value["wraps_at_wh"]))

        since = {}
        # Points stored before counter_since existed have none: as if read at `at`.
        for name, text in dict(data.get("counter_since") or {}).items():
            first = datetime.fromisoformat(text)
            if name not in COUNTERS or first.tzinfo is None:
                raise ValueError(f"counter_since: {name!r} at {text!r}")
            since[name] = first

        return cls(
            at,
            power("solar_power_w"),
            power("grid_power_w"),
            power("battery_power_w"),
            power("load_power_w"),
            counter("pv_counter"),
            counter("grid_import_counter"),
            counter("grid_export_counter"),
            since,
        )


def _positive(w: float | None) -> float | None:
    return None if w is None else max(0.0, w)


def _negative(w: float | None) -> float | None:
    return None if w is None else max(0.0, -w)


# Each flow: its energy field, the power part it is from, and its counter (MeterPoint's
# attribute) if any.
PowerPart = Callable[[MeterPoint], float | None]
FLOWS: tuple[tuple[str, PowerPart, str | None], ...] = (
    (PV_WH.column, lambda p: _positive(p.solar_power_w), "pv_counter"),
    (GRID_IMPORT_WH.column, lambda p: _positive(p.grid_power_w), "grid_import_counter"),
    (GRID_EXPORT_WH.column, lambda p: _negative(p.grid_power_w), "grid_export_counter"),
    (LOAD_WH.column, lambda p: p.load_power_w, None),
    (BATTERY_CHARGE_WH.column, lambda p: _negative(p.battery_power_w), None),
    (BATTERY_DISCHARGE_WH.column, lambda p: _positive(p.battery_power_w), None),
)
COUNTERS = tuple(counter for _, _, counter in FLOWS if counter is not None)
# The longest a device is taken to leave a counter's register unchanged while energy
# flows (some update theirs every 30 or 60 s): an increase after a still register may
# span that much more than one poll, and no more (a replaced meter's jump stays caught).
MAX_COUNTER_UPDATE_S = 300.0


def _counter(point: MeterPoint, name: str | None) -> Counter | None:
    return None if name is None else getattr(point, name)


# Where a counted flow's increase over a gap goes.
GAP_OF = {
    PV_WH.column: GAP_PV_WH.column,
    GRID_IMPORT_WH.column: GAP_GRID_IMPORT_WH.column,
    GRID_EXPORT_WH.column: GAP_GRID_EXPORT_WH.column,
}


def _most_wh(interval_s: float) -> float:
    """The most energy one flow can carry in the interval (the contract's bound)."""
    return MAX_POWER_W * interval_s / SECONDS_PER_HOUR + ENERGY_SLACK_WH


# A counter reads in steps of its scale factor (10^SF Wh). One whose step is more than a
# flow could carry between two samples (a meter counting in kWh, polled every 5 s) says
# nothing about any one interval: power measures that flow instead.
COUNTER_RAW_RANGE = 2**32


def counter_step_wh(counter: Counter) -> float:
    return counter.wraps_at_wh / COUNTER_RAW_RANGE


def counter_increase(
    before: Counter, now: Counter, interval_s: float, span_s: float | None = None
) -> float | None:
    """Wh counted between two reads of a counter `interval_s` apart, a wrap included;
    None when the counter was reset (or jumped further than any flow could in `span_s`,
    the time the increase may cover: by default the interval), or counts in steps too
    coarse for the interval."""
    if counter_step_wh(now) > _most_wh(interval_s):
        return None
    increase = now.wh - before.wh
    if increase < 0:
        increase += now.wraps_at_wh
    most = _most_wh(interval_s if span_s is None else span_s)
    return increase if 0 <= increase <= most else None


def carry_since(prev: MeterPoint | None, now: MeterPoint) -> MeterPoint:
    """`now`, with when each of its counters was first read at its value: as at `prev`
    when the value is the same (the register has not changed), else now."""
    if prev is None or not prev.at <= now.at:
        return now
    since = {}
    for name in COUNTERS:
        before, counter = _counter(prev, name), _counter(now, name)
        if before is not None and counter is not None and before.wh == counter.wh:
            since[name] = prev.since(name)
    return replace(now, counter_since=since)


def energy_between(prev: MeterPoint | None, now: MeterPoint, max_gap_s: float) -> dict[str, Any]:
    """The `energy` part (keyed by column) of the sample at `now`, the one at `prev`
    (None: there was none) before it."""
    interval = 0.0 if prev is None else (now.at - prev.at).total_seconds()
    fresh = prev is None or not 0 <= interval <= MAX_ENERGY_INTERVAL_S
    if fresh:
        interval = 0.0
    covered = interval if interval <= max_gap_s else 0.0
    energy: dict[str, Any] = {INTERVAL_S.column: interval, COVERED_S.column: covered}
    for column, power_of, counter_name in FLOWS:
        power = power_of(now)
        counter = _counter(now, counter_name)
        gap_column = GAP_OF.get(column)
        if gap_column is not None:
            # Only a counter measures a gap; without one, nothing is known of it.
            energy[gap_column] = None if counter is None else 0.0
        if power is None and counter is None:
            energy[column] = None
            continue
        wh = None
        if not fresh and prev is not None:
            before = _counter(prev, counter_name)
            increase = None
            if before is not None and counter is not None and counter_name is not None:
                # The register may have stood still since before `prev`: the increase
                # covers the time since it last changed, plus a poll.
                still_s = (now.at - prev.since(counter_name)).total_seconds()
                span = interval + min(still_s, MAX_COUNTER_UPDATE_S)
                increase = counter_increase(before, counter, interval, span)
            if increase is not None and covered:
                wh = increase
            elif increase is not None and gap_column is not None:
                # Counted while the site was not observed: kept apart from the flow.
                energy[gap_column] = round(increase, DIGITS)
            if wh is None:
                # The trapezoid; a power measured at one end only is taken as constant.
                powers = [w for w in (power_of(prev), power) if w is not None]
                mean = sum(powers) / len(powers) if powers else 0.0
                wh = mean * covered / SECONDS_PER_HOUR
        energy[column] = round(wh or 0.0, DIGITS)
    return energy


class EnergyMeter:
    """The previous sample's point, and the energy of the next one. `measure` is pure;
    `advance` moves on once the sample was stored (with the point `measure` returned)."""

    def __init__(
        self, max_gap: timedelta, persisted: str | None, now: datetime, max_age: timedelta
    ) -> None:
        """`persisted`: the point stored with the last buffered sample; ignored when it
        is unreadable or older than `max_age` (what the buffer keeps)."""
        self.max_gap_s = max_gap.total_seconds()
        self.last: MeterPoint | None = None
        if persisted is not None:
            try:
                point = MeterPoint.from_json(persisted)
            except (ValueError, KeyError, TypeError):
                point = None
            if point is not None and now - point.at <= max_age:
                self.last = point

    def measure(self, reading: Reading, at: datetime) -> tuple[dict[str, Any], MeterPoint]:
        """The sample's energy part (keyed by column) and the point to advance to."""
        point = carry_since(self.last, MeterPoint.of(reading, at))
        return energy_between(self.last, point, self.max_gap_s), point

    def advance(self, point: MeterPoint) -> None:
        self.last = point
