"""The device inventory the agent reads, against the simulator (a real pymodbus server
in its own process): SunSpec common model 1, the battery model 802, the meter."""

from __future__ import annotations

import platform
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from pymodbus.client import ModbusTcpClient

from edge.inventory import agent_inventory, read_inventory
from edge.inverter import SunSpecDevice
from edge.registers import sunspec_map
from edge.simulator.device import BASE, FIRMWARE, MANUFACTURER, MODEL, OPTIONS, SimulatedInverter
from edge.simulator.site import Site
from tests.conftest import SIMULATOR_UNIT
from tests.edge.simulated_site import modbus_server

pytestmark = pytest.mark.integration


@pytest.fixture
def device(simulator) -> Iterator[SunSpecDevice]:
    client = ModbusTcpClient("127.0.0.1", port=simulator, timeout=2, retries=0)
    client.connect()
    try:
        yield SunSpecDevice(client, unit_id=SIMULATOR_UNIT, regmap=sunspec_map())
    finally:
        client.close()


def _raw(device: SunSpecDevice, address: int, count: int = 1) -> list[int]:
    response = device.client.read_holding_registers(address, count=count, device_id=SIMULATOR_UNIT)
    return list(response.registers)


def _signed(value: int) -> int:
    return value - 0x10000 if value >= 0x8000 else value


def test_the_inventory_is_what_the_device_holds(device):
    now = datetime(2026, 12, 1, 12, tzinfo=UTC)
    inventory = read_inventory(device, "site-7", now, agent_inventory("1.2.3"))

    assert inventory.node_id == "site-7"
    assert inventory.ts == now
    inverter = inventory.inverter
    assert (inverter.manufacturer, inverter.model, inverter.options) == (
        MANUFACTURER,
        MODEL,
        OPTIONS,
    )
    assert (inverter.firmware, inverter.serial, inverter.sunspec_model) == (
        FIRMWARE,
        "SIM-000007",
        103,
    )
    # Model 802's nameplate, decoded by hand (WHRtg x 10^WHRtg_SF, WChaDisChaMax_SF).
    base = device.models[802]
    capacity_wh = _raw(device, base + 1)[0] * 10 ** _signed(_raw(device, base + 51)[0])
    charge_w = _raw(device, base + 2)[0] * 10 ** _signed(_raw(device, base + 52)[0])
    battery = inventory.battery
    assert battery is not None
    assert battery.sunspec_model == 802
    assert battery.capacity_wh == pytest.approx(capacity_wh) == pytest.approx(10_000)
    assert battery.max_charge_w == pytest.approx(charge_w) == pytest.approx(5_000)
    assert battery.max_discharge_w == pytest.approx(5_000)
    assert battery.capacity_ah == pytest.approx(10_000 / 51.2, abs=0.1)
    assert inventory.meter is not None
    assert inventory.meter.sunspec_model == 203
    assert inventory.agent.version == "1.2.3"
    assert inventory.agent.python == platform.python_version()
    assert inventory.agent.os


def test_without_a_battery_model_the_storage_model_rates_the_battery(device):
    device.discover()
    del device.models[802]
    battery = read_inventory(device, "site-7", datetime.now(UTC), agent_inventory("1.2.3")).battery
    assert battery is not None
    assert (battery.sunspec_model, battery.capacity_wh) == (124, None)
    assert battery.max_charge_w == pytest.approx(5_000)


class BuggyInverter(SimulatedInverter):
    """The simulator with some registers overwritten after each refresh, as a buggy
    device serves them: {(model id, offset): registers}."""

    def __init__(self, overrides: dict[tuple[int, int], list[int]]) -> None:
        super().__init__(Site(seed=7), SIMULATOR_UNIT)
        self.overrides = overrides

    def refresh(self, registers: list[int]) -> None:
        super().refresh(registers)
        for (model_id, offset), values in self.overrides.items():
            start = self.image.starts[model_id] - BASE + offset
            registers[start : start + len(values)] = values


def test_a_buggy_devices_garbage_is_left_out_not_fatal():
    inverter = BuggyInverter(
        {
            (1, 0): [0xFFFF] * 16,  # Mn: every register "not implemented"
            (1, 48): [0x1B5B, 0x3259, 0xE280, 0xAE41, 0],  # SN: ESC, a bidi override
            (802, 51): [0x7FFF],  # WHRtg_SF far outside -10..10
        }
    )
    with modbus_server(inverter) as port:
        client = ModbusTcpClient("127.0.0.1", port=port, timeout=2, retries=0)
        client.connect()
        try:
            device = SunSpecDevice(client, unit_id=SIMULATOR_UNIT, regmap=sunspec_map())
            inventory = read_inventory(device, "site-7", datetime.now(UTC), agent_inventory("1"))
        finally:
            client.close()
    assert inventory.inverter.manufacturer is None
    assert inventory.inverter.serial == "\ufffd[2Y\ufffdA"
    assert inventory.inverter.model == MODEL
    assert inventory.battery is not None
    assert inventory.battery.capacity_wh is None
    assert inventory.battery.max_charge_w == pytest.approx(5_000)


def test_a_battery_rated_at_0_wh_has_no_capacity():
    # Taken as a capacity, 0 would show a battery at 60 % holding 0 kWh (dashboards).
    inverter = BuggyInverter({(802, 0): [0, 0]})  # AHRtg, WHRtg
    with modbus_server(inverter) as port:
        client = ModbusTcpClient("127.0.0.1", port=port, timeout=2, retries=0)
        client.connect()
        try:
            device = SunSpecDevice(client, unit_id=SIMULATOR_UNIT, regmap=sunspec_map())
            battery = read_inventory(
                device, "site-7", datetime.now(UTC), agent_inventory("1")
            ).battery
        finally:
            client.close()
    assert battery is not None
    assert (battery.capacity_wh, battery.capacity_ah) == (None, None)
    assert battery.max_charge_w == pytest.approx(5_000)
