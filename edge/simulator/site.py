"""The physics of a simulated home: PV on a daily curve, a load, a battery that follows
its storage controls (SunSpec model 124), and the grid taking the difference.

Deterministic for a seed and a simulated time, so tests can freeze the clock.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass


@dataclass(frozen=True)
class Snapshot:
    """One instant. Sign conventions as in contract/telemetry.py."""

    pv_w: float
    load_w: float
    battery_w: float  # + discharging, - charging
    grid_w: float  # + import, - export
    soc_percent: float


@dataclass
class Controls:
    """What model 124 asks of the battery: AUTO (self-consumption), CHARGE or DISCHARGE
    at `rate_percent` of the battery's maximum power."""

    mode: str = "AUTO"
    rate_percent: float = 0.0


class Site:
    def __init__(
        self,
        seed: int,
        capacity_wh: float = 10_000,
        max_battery_w: float = 5_000,
        pv_peak_w: float = 6_000,
        soc_percent: float = 50.0,
    ) -> None:
        rng = random.Random(seed)  # noqa: S311 - simulation, not security
        self.seed = seed
        self.capacity_wh = capacity_wh
        self.max_battery_w = max_battery_w
        self.pv_peak_w = pv_peak_w * rng.uniform(0.8, 1.2)
        self.base_load_w = rng.uniform(300, 700)
        self.soc_percent = soc_percent
        self.controls = Controls()
        self._last_s: float | None = None

    def _noise(self, t_s: float, salt: int) -> float:
        """Smooth-ish noise in [-1, 1], a pure function of seed and minute."""
        minute = int(t_s // 60)
        rng = random.Random(hash((self.seed, salt, minute)))  # noqa: S311 - simulation
        return float(rng.uniform(-1, 1))

    def pv_w(self, t_s: float) -> float:
        hour = (t_s / 3600) % 24
        if not 6 <= hour <= 20:
            return 0.0
        sun = math.sin((hour - 6) / 14 * math.pi)
        clouds = 0.85 + 0.15 * self._noise(t_s, 1)
        return round(max(0.0, self.pv_peak_w * math.pow(sun, 1.5) * clouds), 1)

    def load_w(self, t_s: float) -> float:
        hour = (t_s / 3600) % 24
        peaks = 900 * math.exp(-((hour - 7.5) ** 2)) + 1500 * math.exp(-((hour - 19) ** 2) / 2)
        return round(self.base_load_w + peaks + 100 * self._noise(t_s, 2), 1)

    def step(self, t_s: float) -> Snapshot:
        """Advances the battery to simulated time `t_s` (seconds) and returns the state."""
        pv, load = self.pv_w(t_s), self.load_w(t_s)
        mode, rate = self.controls.mode, self.controls.rate_percent / 100 * self.max_battery_w
        if mode == "CHARGE":
            battery = -rate
        elif mode == "DISCHARGE":
            battery = rate
        else:
            battery = max(-self.max_battery_w, min(self.max_battery_w, load - pv))
        if (battery < 0 and self.soc_percent >= 100) or (battery > 0 and self.soc_percent <= 5):
            battery = 0.0
        if self._last_s is not None and t_s > self._last_s:
            hours = (t_s - self._last_s) / 3600
            self.soc_percent -= battery * hours / self.capacity_wh * 100
            self.soc_percent = max(0.0, min(100.0, self.soc_percent))
        self._last_s = t_s
        grid = load - pv - battery
        return Snapshot(
            pv,
            load,
            round(battery, 1),
            round(grid, 1),
            round(self.soc_percent, 2),
        )
