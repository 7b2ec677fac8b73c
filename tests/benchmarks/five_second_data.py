"""Realistic 5-second telemetry of a home energy site, as the collector stores it: one
`telemetry` row (collector/telemetry_row.py TELEMETRY_COLUMNS, fixed-point fields as
their integers) per poll, with the noise
and resolution real devices give, since compression ratios depend on exactly that
(a smooth synthetic curve compresses far better than a meter does).

- Time: a poll every 5 s by the agent's clock, which jitters by milliseconds (the ts
  keeps its microseconds); about one poll in 1,000 is missed (a Modbus timeout), so the
  next sample's interval is 10 s. `received_at` is the arrival at the collector, 40 ms to
  a few hundred ms later.
- PV: a clear-sky bell from sunrise to sunset scaled to the site's size, times the day's
  weather: clear, overcast (a slowly wandering 15-35 %), or broken clouds (shade for 20 s
  to 10 minutes at a time, 20-50 % of clear sky); whole watts (SunSpec DCW).
- Load: a base with metering noise, a fridge cycling, and appliances switched on at
  random (more in the morning and evening) for minutes at a time; whole watts.
- Battery (+ discharging): covers the load from PV surplus, and is discharged into the
  load while charged, within its power; its SOC integrates that (0.1 % resolution) and
  its voltage follows SOC and current (0.1 V).
- Grid (+ import): load - PV - battery, plus meter noise; whole watts.
- Energies as the agent counts them (edge/energy_meter.py): on sites with counters
  (two in three), PV, import and export are a Wh counter's whole-Wh increases and the
  gap fields 0.0; otherwise everything is the trapezoid of power over `covered_s`, to
  3 decimals, and the gap fields NULL. Load and battery energies are always trapezoids.
- Price: the tariff's import price of the hour (night, day, peak); grid mode AUTO,
  FORCE_CHARGE on cheap nights when the battery is low.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from contract.fields import TELEMETRY

STEP_S = 5.0
MISSED_POLL = 0.001
COUNTER_SITES = (0, 1)  # k % 3 in these: the site's devices have energy counters
DIGITS = 3  # edge/energy_meter.py rounds energies to mWh
# A row is stored with its fixed-point fields as integers (contract/fields.py FixedPoint).
SCALES = tuple(f.stored.scale if f.stored else None for f in TELEMETRY)


@dataclass(frozen=True)
class Site:
    node_id: str
    tenant_id: int
    k: int  # the site's number: seeds its randomness and its sizes

    @property
    def pv_peak_w(self) -> float:
        return 3000 + (self.k * 37 % 51) * 100

    @property
    def base_load_w(self) -> float:
        return 180 + (self.k * 13 % 21) * 15

    @property
    def battery_max_w(self) -> float:
        return 2500 + (self.k % 4) * 800

    @property
    def battery_wh(self) -> float:
        return 5000 + (self.k % 5) * 2000

    @property
    def counters(self) -> bool:
        return self.k % 3 in COUNTER_SITES


def _price(hour: float) -> float:
    if hour < 6:
        return 0.37
    if 17 <= hour < 21:
        return 0.99
    return 0.62


class _Weather:
    """The sky of one day: what fraction of clear-sky PV reaches the panels."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.kind = rng.choices(("clear", "overcast", "broken"), (0.3, 0.2, 0.5))[0]
        self.level = rng.uniform(0.15, 0.35)
        self.shaded = False
        self.left_s = 0.0

    def factor(self, dt_s: float) -> float:
        rng = self.rng
        if self.kind == "clear":
            return 0.97 + rng.gauss(0, 0.005)
        if self.kind == "overcast":
            self.level = min(0.45, max(0.08, self.level + rng.gauss(0, 0.004)))
            return self.level
        self.left_s -= dt_s
        if self.left_s <= 0:
            self.shaded = not self.shaded
            self.left_s = rng.uniform(20, 600)
            self.level = rng.uniform(0.2, 0.5) if self.shaded else rng.uniform(0.85, 1.0)
        return self.level + rng.gauss(0, 0.01)


class _Load:
    """A household: base, fridge, and appliances running for a while."""

    def __init__(self, rng: random.Random, base_w: float) -> None:
        self.rng = rng
        self.base_w = base_w
        self.fridge_s = rng.uniform(0, 2700)
        self.appliances: list[tuple[float, float]] = []  # (watts, seconds left)

    def watts(self, hour: float, dt_s: float) -> float:
        rng = self.rng
        self.fridge_s = (self.fridge_s + dt_s) % 2700
        fridge = 110.0 if self.fridge_s < 900 else 0.0
        busy = 3.0 if 6.5 <= hour < 9 or 17 <= hour < 22 else 1.0 if 9 <= hour < 23 else 0.2
        if rng.random() < busy * dt_s / 5400:
            self.appliances.append(
                (rng.choice((60, 150, 800, 1200, 2000, 2400)), rng.uniform(60, 1200))
            )
        self.appliances = [(w, left - dt_s) for w, left in self.appliances if left > dt_s]
        return self.base_w + fridge + sum(w for w, _ in self.appliances) + rng.gauss(0, 12)


def _daylight(hour: float, day_of_year: int) -> float:
    """Clear-sky PV as a fraction of peak: a bell between sunrise and sunset, the day
    longer in summer."""
    half = 6.0 + 2.5 * math.sin(2 * math.pi * (day_of_year - 80) / 365)
    x = (hour - 11.0) / half  # hour in UTC: solar noon in central Europe
    return math.cos(x * math.pi / 2) ** 1.5 if abs(x) < 1 else 0.0


def samples(site: Site, start: datetime, end: datetime, seed: int = 0) -> Iterator[list[Any]]:
    """The site's rows from `start` to `end` (UTC, aware), in time order, seq counting
    from 0 at the first; each in TELEMETRY_COLUMNS order. Deterministic for a seed."""
    rng = random.Random(site.k * 7919 + seed)
    load = _Load(rng, site.base_load_w)
    soc = 30.0 + site.k % 40
    counters = {
        "pv": rng.uniform(1e6, 2e7),
        "imp": rng.uniform(1e6, 2e7),
        "exp": rng.uniform(1e6, 2e7),
    }
    counted = {name: math.floor(value) for name, value in counters.items()}
    weather: _Weather | None = None
    day = None
    prev: tuple[datetime, float, float, float, float] | None = None  # ts, pv, load, battery, grid
    seq = 0
    nominal = start
    while nominal < end:
        nominal += timedelta(seconds=STEP_S)
        if rng.random() < MISSED_POLL:
            continue
        ts = nominal + timedelta(
            microseconds=int(rng.uniform(0, 25_000) + abs(rng.gauss(0, 4_000)))
        )
        if ts.date() != day:
            day = ts.date()
            weather = _Weather(rng)
        assert weather is not None
        hour = ts.hour + ts.minute / 60 + ts.second / 3600
        dt_s = STEP_S if prev is None else (ts - prev[0]).total_seconds()
        pv = round(
            max(
                0.0, site.pv_peak_w * _daylight(hour, ts.timetuple().tm_yday) * weather.factor(dt_s)
            )
        )
        house = max(0.0, load.watts(hour, dt_s))
        surplus = pv - house
        if surplus > 0 and soc < 95:
            battery = -min(surplus, site.battery_max_w)
        elif surplus < 0 and soc > 10:
            battery = min(-surplus, site.battery_max_w)
        else:
            battery = 0.0
        battery = round(battery + rng.gauss(0, 6))
        grid = round(house - pv - battery + rng.gauss(0, 8))
        house = round(house)
        soc = min(100.0, max(0.0, soc - battery * dt_s / 3600 / site.battery_wh * 100))
        voltage = round(48.0 + soc * 0.06 - battery * 0.0004 + rng.gauss(0, 0.05), 1)
        mode = "FORCE_CHARGE" if hour < 5 and soc < 15 else "AUTO"
        interval = covered = 0.0 if prev is None else (ts - prev[0]).total_seconds()
        energy: dict[str, float | None] = {}
        flows = {
            "pv": (pv, None if prev is None else prev[1]),
            "imp": (max(grid, 0), None if prev is None else max(prev[4], 0)),
            "exp": (max(-grid, 0), None if prev is None else max(-prev[4], 0)),
            "load": (house, None if prev is None else prev[2]),
            "chg": (max(-battery, 0), None if prev is None else max(-prev[3], 0)),
            "dis": (max(battery, 0), None if prev is None else max(prev[3], 0)),
        }
        for name, (now_w, before_w) in flows.items():
            wh = 0.0 if before_w is None else (now_w + before_w) / 2 * covered / 3600
            if site.counters and name in counters:
                counters[name] += wh
                whole = math.floor(counters[name])
                energy[name] = float(whole - counted[name])
                counted[name] = whole
            else:
                energy[name] = round(wh, DIGITS)
        gap = 0.0 if site.counters else None
        received = ts + timedelta(microseconds=int(40_000 + rng.expovariate(1 / 80_000)))
        sent: list[Any] = [
            ts, site.node_id, site.tenant_id, seq, round(soc, 1), voltage, float(battery),
            float(pv), float(grid), float(house), _price(hour), mode, received, interval,
            covered, energy["pv"], energy["imp"], energy["exp"], energy["load"],
            energy["chg"], energy["dis"], gap, gap, gap,
        ]  # fmt: skip
        yield [
            value if scale is None or value is None else round(value * scale)
            for value, scale in zip(sent, SCALES, strict=True)
        ]
        prev = (ts, pv, house, battery, grid)
        seq += 1
