"""Today's energy for the local status page: solar, grid import and export, and the
home's use, in kWh since local midnight, integrated from the agent's own readings.

A display figure, not billing: each reading's power is taken to hold from that reading
until the next one, but for no longer than `max_cover` (a reading says nothing about a
gap where the inverter or the agent was down). Time before local midnight belongs to
the previous day and is left out. Kept in memory only: after a restart the day's count
starts again, and `since` says from when it counts.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta, tzinfo
from typing import Any, Protocol

WH_PER_KWH = 1000.0
SECONDS_PER_HOUR = 3600.0


class Powers(Protocol):
    """A reading's powers in W, signed as the field table says (contract/fields.py):
    grid + import, - export; solar and load >= 0. None: not measured, counts as 0."""

    @property
    def solar_power_w(self) -> float | None: ...
    @property
    def grid_power_w(self) -> float | None: ...
    @property
    def load_power_w(self) -> float | None: ...


class EnergyToday:
    """Feed it every usable reading, in time order, with `add`; read it with `snapshot`.
    `tz` is the site's time zone (the config's `timezone`)."""

    def __init__(self, max_cover: timedelta, tz: tzinfo) -> None:
        self.max_cover = max_cover
        self.tz = tz
        self.day: date | None = None
        self.day_start: datetime | None = None  # local midnight of `day`
        self.since: datetime | None = None  # counting since: midnight or a later start
        self.solar_wh = self.grid_import_wh = self.grid_export_wh = self.load_wh = 0.0
        self._last: tuple[datetime, Powers] | None = None

    def _midnight(self, day: date) -> datetime:
        return datetime.combine(day, time(), tzinfo=self.tz)

    def add(self, powers: Powers, at: datetime) -> None:
        """Counts the previous reading's powers up to `at` (at most `max_cover` after it,
        and from local midnight on), then remembers this one. `at` must be aware; a
        clock that went back counts nothing for that step."""
        day = at.astimezone(self.tz).date()
        if day != self.day:
            self.day, self.day_start = day, self._midnight(day)
            self.solar_wh = self.grid_import_wh = self.grid_export_wh = self.load_wh = 0.0
            last_at = self._last[0] if self._last else None
            covered = last_at is not None and last_at + self.max_cover >= self.day_start
            self.since = self.day_start if covered else at
        if self._last is not None:
            last_at, last = self._last
            assert self.day_start is not None
            start = max(last_at, self.day_start)
            end = min(at, last_at + self.max_cover)
            if end > start:
                self._count(last, (end - start).total_seconds() / SECONDS_PER_HOUR)
        self._last = (at, powers)

    def _count(self, p: Powers, hours: float) -> None:
        self.solar_wh += (p.solar_power_w or 0.0) * hours
        self.load_wh += (p.load_power_w or 0.0) * hours
        grid = p.grid_power_w or 0.0
        if grid > 0:
            self.grid_import_wh += grid * hours
        else:
            self.grid_export_wh -= grid * hours

    def snapshot(self) -> dict[str, Any]:
        """The status page's keys: kWh so far today, and since when they count (ISO 8601
        with the site's UTC offset; None before the first reading)."""
        return {
            "energy_today_since": self.since.isoformat() if self.since else None,
            "solar_kwh_today": round(self.solar_wh / WH_PER_KWH, 3),
            "grid_import_kwh_today": round(self.grid_import_wh / WH_PER_KWH, 3),
            "grid_export_kwh_today": round(self.grid_export_wh / WH_PER_KWH, 3),
            "load_kwh_today": round(self.load_wh / WH_PER_KWH, 3),
        }
