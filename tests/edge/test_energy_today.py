"""Today's energy on the status page: power integrated over the time each reading covers,
gaps left out, counted again from local midnight."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from edge.energy_today import EnergyToday

WARSAW = ZoneInfo("Europe/Warsaw")


@dataclass(frozen=True)
class P:
    solar_power_w: float | None = 0.0
    grid_power_w: float | None = 0.0
    load_power_w: float | None = 0.0


def test_each_reading_counts_until_the_next_one():
    energy = EnergyToday(timedelta(seconds=15), WARSAW)
    start = datetime(2026, 6, 1, 12, 0, tzinfo=WARSAW)
    # 3600 W of solar for an hour in 5-second readings: 3.6 kWh; the last reading
    # covers nothing yet (its time has not passed).
    for step in range(721):
        energy.add(P(3600, -1000, 2600), start + step * timedelta(seconds=5))
    assert energy.snapshot() == {
        "energy_today_since": "2026-06-01T12:00:00+02:00",
        "solar_kwh_today": pytest.approx(3.6),
        "grid_import_kwh_today": 0.0,
        "grid_export_kwh_today": pytest.approx(1.0),
        "load_kwh_today": pytest.approx(2.6),
    }


def test_import_and_export_are_counted_apart_and_unmeasured_counts_nothing():
    energy = EnergyToday(timedelta(minutes=5), WARSAW)
    at = datetime(2026, 6, 1, 8, 0, tzinfo=WARSAW)
    energy.add(P(grid_power_w=2000), at)  # importing for 3 minutes: 0.1 kWh
    energy.add(P(grid_power_w=-4000), at + timedelta(minutes=3))  # exporting for 3: 0.2
    unmeasured = P(solar_power_w=None, grid_power_w=None, load_power_w=None)
    energy.add(unmeasured, at + timedelta(minutes=6))
    energy.add(P(), at + timedelta(minutes=9))
    snapshot = energy.snapshot()
    assert snapshot["grid_import_kwh_today"] == pytest.approx(0.1)
    assert snapshot["grid_export_kwh_today"] == pytest.approx(0.2)


def test_a_gap_counts_only_the_cover_of_the_reading_before_it():
    energy = EnergyToday(timedelta(seconds=15), WARSAW)
    at = datetime(2026, 6, 1, 9, 0, tzinfo=WARSAW)
    energy.add(P(solar_power_w=3600), at)
    # The agent (or the inverter) was away for an hour: the reading before the gap
    # stands for 15 seconds, not the hour.
    energy.add(P(solar_power_w=3600), at + timedelta(hours=1))
    energy.add(P(solar_power_w=0), at + timedelta(hours=1, seconds=5))
    assert energy.snapshot()["solar_kwh_today"] == pytest.approx(3.6 * 20 / 3600, abs=1e-3)
    assert energy.solar_wh == pytest.approx(20.0)


def test_a_clock_that_goes_back_counts_nothing_for_that_step():
    energy = EnergyToday(timedelta(seconds=15), WARSAW)
    at = datetime(2026, 6, 1, 9, 0, tzinfo=WARSAW)
    energy.add(P(solar_power_w=3600), at)
    energy.add(P(solar_power_w=3600), at - timedelta(seconds=5))
    assert energy.solar_wh == 0.0
    energy.add(P(solar_power_w=3600), at + timedelta(seconds=5))
    assert energy.solar_wh == pytest.approx(10.0)  # the earlier reading, 10 s to now


def test_local_midnight_starts_a_new_day_with_only_the_time_after_it():
    energy = EnergyToday(timedelta(seconds=30), WARSAW)
    before = datetime(2026, 6, 1, 23, 59, 50, tzinfo=WARSAW)
    energy.add(P(load_power_w=3600), before)
    energy.add(P(load_power_w=3600), before + timedelta(seconds=5))
    assert energy.load_wh == pytest.approx(5.0)
    # This step spans midnight: 5 s of it were yesterday, 15 s are today.
    energy.add(P(load_power_w=3600), before + timedelta(seconds=25))
    assert energy.load_wh == pytest.approx(15.0)
    assert energy.snapshot()["energy_today_since"] == "2026-06-02T00:00:00+02:00"


def test_midnight_is_the_sites_not_utcs():
    energy = EnergyToday(timedelta(seconds=30), WARSAW)
    # 22:00 UTC is midnight in Warsaw in summer (UTC+2).
    utc = datetime(2026, 6, 1, 21, 59, 55, tzinfo=UTC)
    energy.add(P(solar_power_w=3600), utc)
    energy.add(P(solar_power_w=3600), utc + timedelta(seconds=10))
    assert energy.solar_wh == pytest.approx(5.0)
    assert energy.day == datetime(2026, 6, 2).date()


def test_after_a_gap_over_midnight_the_day_counts_from_the_first_reading():
    energy = EnergyToday(timedelta(seconds=15), WARSAW)
    energy.add(P(solar_power_w=1000), datetime(2026, 6, 1, 20, 0, tzinfo=WARSAW))
    morning = datetime(2026, 6, 2, 6, 30, tzinfo=WARSAW)
    energy.add(P(solar_power_w=1000), morning)
    assert energy.snapshot() == {
        "energy_today_since": "2026-06-02T06:30:00+02:00",
        "solar_kwh_today": 0.0,
        "grid_import_kwh_today": 0.0,
        "grid_export_kwh_today": 0.0,
        "load_kwh_today": 0.0,
    }


def test_before_the_first_reading_there_is_nothing_to_show():
    assert EnergyToday(timedelta(seconds=15), WARSAW).snapshot()["energy_today_since"] is None
