"""Each sample's energy part (edge/energy_meter.py): counters when the device has them,
wraps and resets handled, power over the time a sample covers otherwise, and the
point it is measured from kept across a restart."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from contract.telemetry import TELEMETRY_SAMPLE
from edge.agent import sample_body
from edge.buffer import SampleBuffer
from edge.energy_meter import EnergyMeter, MeterPoint, counter_increase, energy_between
from edge.inverter import ACC32_RANGE, Counter, Reading

T0 = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
GAP_S = 15.0  # three 5-second polls
RANGE = float(ACC32_RANGE)


def reading(
    solar: float | None = 3000.0,
    grid: float | None = -1000.0,
    battery: float | None = -500.0,
    load: float | None = 1500.0,
    pv_wh: float | None = None,
    import_wh: float | None = None,
    export_wh: float | None = None,
) -> Reading:
    def counter(wh: float | None) -> Counter | None:
        return None if wh is None else Counter(wh, RANGE)

    return Reading(
        soc_percent=50.0,
        battery_voltage=None,
        battery_power_w=battery,
        solar_power_w=solar,
        grid_power_w=grid,
        load_power_w=load,
        grid_mode="AUTO",
        pv_counter=counter(pv_wh),
        grid_import_counter=counter(import_wh),
        grid_export_counter=counter(export_wh),
    )


def energy(before: Reading | None, after: Reading, seconds: float) -> dict[str, Any]:
    prev = None if before is None else MeterPoint.of(before, T0)
    return energy_between(prev, MeterPoint.of(after, T0 + timedelta(seconds=seconds)), GAP_S)


def test_the_first_sample_ever_covers_nothing():
    assert energy(None, reading(), 0) == {
        "interval_s": 0.0,
        "covered_s": 0.0,
        "pv_wh": 0.0,
        "grid_import_wh": 0.0,
        "grid_export_wh": 0.0,
        "load_wh": 0.0,
        "battery_charge_wh": 0.0,
        "battery_discharge_wh": 0.0,
        # No counters: nothing would be known of a gap.
        "gap_pv_wh": None,
        "gap_grid_import_wh": None,
        "gap_grid_export_wh": None,
    }


def test_without_counters_each_flow_is_the_trapezoid_of_its_powers_split_by_sign():
    before = reading(solar=3000, grid=-1000, battery=-500, load=1500)
    after = reading(solar=3600, grid=600, battery=200, load=4400)
    e = energy(before, after, 10)
    assert e["interval_s"] == e["covered_s"] == 10.0
    assert e["pv_wh"] == pytest.approx((3000 + 3600) / 2 * 10 / 3600, abs=1e-3)
    assert e["load_wh"] == pytest.approx((1500 + 4400) / 2 * 10 / 3600, abs=1e-3)
    # Grid -1000 -> +600: the import part is 0 -> 600, the export part 1000 -> 0.
    assert e["grid_import_wh"] == pytest.approx(300 * 10 / 3600, abs=1e-3)
    assert e["grid_export_wh"] == pytest.approx(500 * 10 / 3600, abs=1e-3)
    assert e["battery_charge_wh"] == pytest.approx(250 * 10 / 3600, abs=1e-3)
    assert e["battery_discharge_wh"] == pytest.approx(100 * 10 / 3600, abs=1e-3)


def test_counters_give_their_increase_and_power_fills_in_the_rest():
    before = reading(pv_wh=10_000, import_wh=5_000, export_wh=7_000)
    after = reading(pv_wh=10_009, import_wh=5_000, export_wh=7_003)
    e = energy(before, after, 10)
    assert (e["pv_wh"], e["grid_import_wh"], e["grid_export_wh"]) == (9.0, 0.0, 3.0)
    assert e["load_wh"] == pytest.approx(1500 * 10 / 3600, abs=1e-3)


def test_after_a_gap_counters_count_the_gap_apart_and_power_covers_nothing():
    before = reading(pv_wh=10_000, import_wh=None, export_wh=None)
    after = reading(pv_wh=12_500)
    e = energy(before, after, 3600)
    assert (e["interval_s"], e["covered_s"]) == (3600.0, 0.0)
    # The counter's increase is the gap's, not an observed flow's: priced by no one.
    assert (e["pv_wh"], e["gap_pv_wh"]) == (0.0, 2500.0)
    assert e["grid_import_wh"] == e["grid_export_wh"] == e["load_wh"] == 0.0
    assert e["gap_grid_import_wh"] is e["gap_grid_export_wh"] is None  # no counters
    assert e["battery_charge_wh"] == e["battery_discharge_wh"] == 0.0


def test_observed_intervals_leave_the_gap_fields_at_zero():
    e = energy(reading(pv_wh=10_000), reading(pv_wh=10_004), 5)
    assert (e["pv_wh"], e["gap_pv_wh"]) == (4.0, 0.0)


def test_a_counter_coarser_than_a_flow_between_two_polls_gives_way_to_power():
    """A meter counting in kWh (scale factor 3) steps 1,000 Wh at a time: no 5-second
    interval can hold a step, so power measures every interval."""
    kwh_counter = 1000 * RANGE  # wraps at 2^32 raw units of 1 kWh
    steps = []
    for i, counted in enumerate((5_000, 5_000, 6_000, 6_000)):
        before = MeterPoint.of(reading(grid=3600), T0 + timedelta(seconds=5 * i))
        before = dataclasses.replace(
            before, grid_import_counter=Counter(counted - (1000 if i == 2 else 0), kwh_counter)
        )
        after = dataclasses.replace(
            MeterPoint.of(reading(grid=3600), T0 + timedelta(seconds=5 * (i + 1))),
            grid_import_counter=Counter(counted, kwh_counter),
        )
        steps.append(energy_between(before, after, GAP_S)["grid_import_wh"])
    assert steps == [5.0] * 4  # 3.6 kW for 5 s each, the step counted nowhere


def test_a_counter_that_wrapped_near_the_top_counts_across_the_wrap():
    before = reading(import_wh=RANGE - 4)
    after = reading(import_wh=6)
    assert energy(before, after, 10)["grid_import_wh"] == 10.0
    # With a scale factor of 10 (one raw unit is 10 Wh), it wraps at 2^32 x 10 Wh.
    scaled = Counter(10 * RANGE - 40, 10 * RANGE)
    assert counter_increase(scaled, Counter(60, 10 * RANGE), 10) == 100


def test_a_counter_reset_far_from_the_top_falls_back_to_power():
    before = reading(grid=400, import_wh=2_000_000)
    after = reading(grid=800, import_wh=12)  # a new meter
    assert energy(before, after, 10)["grid_import_wh"] == pytest.approx(600 * 10 / 3600, abs=1e-3)


def test_a_jump_no_flow_could_make_in_the_interval_falls_back_to_power():
    before = reading(grid=400, import_wh=1_000)
    after = reading(grid=400, import_wh=900_000)  # 900 kWh in 10 s
    assert energy(before, after, 10)["grid_import_wh"] == pytest.approx(400 * 10 / 3600, abs=1e-3)


@pytest.mark.parametrize(
    ("import_w", "update_s"), [(9_000, 60), (20_000, 30), (5_000, 60), (7_000, 5)]
)
def test_a_counter_updated_less_often_than_polled_counts_all_it_counted(import_w, update_s):
    """A device that updates its counter register every 30 or 60 s: the polls between
    count nothing, and the catch-up increase used to be judged against one 5-second poll
    (at 9 kW a minute's 150 Wh is more than 100 kW carry in 5 s) and replaced by 5 s of
    power: 0.75 kWh kept of 9."""
    meter = EnergyMeter(timedelta(seconds=GAP_S), None, T0, timedelta(days=8))
    counted = 0.0
    for i in range(0, 3601, 5):
        registered = (i // update_s) * update_s * import_w // 3600  # whole Wh at its update
        at = T0 + timedelta(seconds=i)
        e, point = meter.measure(reading(grid=import_w, import_wh=registered), at)
        meter.advance(point)
        counted += e["grid_import_wh"]
    assert counted == import_w  # an hour of it, all of it counted


def test_a_still_counter_keeps_catching_a_replaced_meter():
    """The span a still register allows is bounded: a replaced meter that reads far
    higher after an hour without change is still no flow."""
    meter = EnergyMeter(timedelta(seconds=GAP_S), None, T0, timedelta(days=8))
    for i in range(0, 3601, 5):
        e, point = meter.measure(reading(grid=0, import_wh=1_000), T0 + timedelta(seconds=i))
        meter.advance(point)
    e, point = meter.measure(reading(grid=400, import_wh=900_000), T0 + timedelta(seconds=3605))
    assert e["grid_import_wh"] == pytest.approx(200 * 5 / 3600, abs=1e-3)  # the trapezoid


def test_when_a_counter_stood_still_survives_a_restart():
    before = dataclasses.replace(
        MeterPoint.of(reading(import_wh=1_000), T0 + timedelta(seconds=50)),
        counter_since={"grid_import_counter": T0},
    )
    assert MeterPoint.from_json(before.to_json()) == before
    # A point stored before counter_since existed reads as read at its time.
    old = json.loads(before.to_json())
    del old["counter_since"]
    assert MeterPoint.from_json(json.dumps(old)).since("grid_import_counter") == before.at


def test_a_counter_that_appears_or_vanishes_falls_back_to_power():
    e = energy(reading(pv_wh=None), reading(solar=3000, pv_wh=500), 10)
    assert e["pv_wh"] == pytest.approx(3000 * 10 / 3600, abs=1e-3)
    e = energy(reading(pv_wh=500), reading(solar=3000, pv_wh=None), 10)
    assert e["pv_wh"] == pytest.approx(3000 * 10 / 3600, abs=1e-3)


def test_flows_the_device_does_not_measure_are_null_and_left_off_the_wire():
    without = reading(grid=None, battery=None, load=None)
    e = energy(without, without, 5)
    assert e["grid_import_wh"] is e["grid_export_wh"] is e["load_wh"] is None
    assert e["battery_charge_wh"] is e["battery_discharge_wh"] is None
    assert e["pv_wh"] == pytest.approx(3000 * 5 / 3600, abs=1e-3)
    body = sample_body(without, "n1", T0, 0.5, e)
    assert body["energy"]["grid_import_wh"] is None
    TELEMETRY_SAMPLE.validate_python({**body, "seq": 0})


def test_a_clock_that_went_back_starts_afresh():
    e = energy(reading(pv_wh=100), reading(pv_wh=200), -30)
    assert (e["interval_s"], e["covered_s"], e["pv_wh"]) == (0.0, 0.0, 0.0)


def test_the_energy_part_passes_the_contract_checks():
    before = reading(solar=90_000, pv_wh=1_000)
    after = reading(solar=90_000, pv_wh=1_250)
    e = energy(before, after, 10)
    TELEMETRY_SAMPLE.validate_python({**sample_body(after, "n1", T0, 0.5, e), "seq": 0})


def test_the_point_stored_with_a_sample_carries_the_count_across_a_restart(tmp_path):
    buffer = SampleBuffer(tmp_path / "buffer.sqlite3", 100, timedelta(days=8))
    meter = EnergyMeter(timedelta(seconds=GAP_S), buffer.meter_point(), T0, buffer.max_age)
    first = reading(pv_wh=10_000, import_wh=100, export_wh=200)
    _, point = meter.measure(first, T0)
    buffer.append({"n": 1}, T0, point.to_json())
    meter.advance(point)
    buffer.close()

    again = SampleBuffer(tmp_path / "buffer.sqlite3", 100, timedelta(days=8))
    later = T0 + timedelta(seconds=12)
    restarted = EnergyMeter(timedelta(seconds=GAP_S), again.meter_point(), later, again.max_age)
    e, _ = restarted.measure(reading(pv_wh=10_010, import_wh=100, export_wh=203), later)
    again.close()
    assert e["interval_s"] == e["covered_s"] == 12.0
    assert (e["pv_wh"], e["grid_import_wh"], e["grid_export_wh"]) == (10.0, 0.0, 3.0)
    assert e["load_wh"] == pytest.approx(1500 * 12 / 3600, abs=1e-3)


def test_a_stored_point_older_than_the_buffer_keeps_or_unreadable_is_ignored():
    point = MeterPoint.of(reading(pv_wh=10), T0).to_json()
    max_age = timedelta(days=8)
    late = T0 + timedelta(days=9)
    assert EnergyMeter(timedelta(seconds=GAP_S), point, late, max_age).last is None
    assert EnergyMeter(timedelta(seconds=GAP_S), "{not json", T0, max_age).last is None
    assert EnergyMeter(timedelta(seconds=GAP_S), point, T0, max_age).last == MeterPoint.of(
        reading(pv_wh=10), T0
    )
