"""The SunSpec reader against the simulator: a real pymodbus server in its own process."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from pymodbus.client import ModbusTcpClient

from edge.inverter import InverterError, SunSpecDevice
from edge.registers import sunspec_map
from tests.support.services import free_port

pytestmark = pytest.mark.integration


@pytest.fixture
def device(simulator) -> Iterator[SunSpecDevice]:
    client = ModbusTcpClient("127.0.0.1", port=simulator, timeout=2, retries=0)
    client.connect()
    try:
        yield SunSpecDevice(client, unit_id=3, regmap=sunspec_map())
    finally:
        client.close()


def _raw(device: SunSpecDevice, address: int, count: int = 1) -> list[int]:
    return list(device.client.read_holding_registers(address, count=count, device_id=3).registers)


def _signed(value: int) -> int:
    return value - 0x10000 if value >= 0x8000 else value


def test_discovery_walks_the_model_chain(device):
    assert device.discover() == {
        1: 40004,
        103: 40072,
        124: 40124,
        802: 40150,
        160: 40214,
        203: 40264,
    }
    common = device.read_model(1)
    assert (common["Mn"], common["SN"]) == ("wattfleet", "SIM-000007")


def test_reading_matches_the_registers_after_scaling(device):
    reading = device.reading()
    models = device.models
    # Decode by hand, independently of edge.registers.
    ac_w = _signed(_raw(device, models[103] + 12)[0]) * 10 ** _signed(
        _raw(device, models[103] + 13)[0]
    )
    soc = _raw(device, models[124] + 6)[0] * 10 ** _signed(_raw(device, models[124] + 20)[0])
    volts = _raw(device, models[124] + 8)[0] * 10 ** _signed(_raw(device, models[124] + 22)[0])
    grid = _signed(_raw(device, models[203] + 16)[0]) * 10 ** _signed(
        _raw(device, models[203] + 20)[0]
    )
    strings = [_raw(device, models[160] + 8 + 20 * i + 11)[0] for i in range(2)]
    assert reading.soc_percent == pytest.approx(soc) == pytest.approx(62.5)
    assert reading.battery_voltage == pytest.approx(volts)
    assert reading.grid_power_w == pytest.approx(grid)
    assert reading.solar_power_w == pytest.approx(sum(strings))
    assert reading.solar_power_w > 1000  # noon
    assert reading.battery_power_w == pytest.approx(ac_w - sum(strings))
    assert reading.load_power_w == pytest.approx(ac_w + grid)
    assert reading.load_power_w > 0
    assert reading.grid_mode == "AUTO"  # StorCtl_Mod 0: the inverter decides


def test_storage_controls_change_the_simulated_battery(device):
    device.discover()
    device.write(124, {"InWRte": 40.0, "StorCtl_Mod": 1})  # charge at 40 % of WChaMax
    reading = device.reading()
    storage = device.read_model(124)
    assert reading.grid_mode == "FORCE_CHARGE"
    assert storage["StorCtl_Mod"] == 1
    assert storage["InWRte"] == pytest.approx(40.0)
    assert storage["ChaSt"] == 4  # charging
    assert reading.battery_power_w == pytest.approx(-0.4 * storage["WChaMax"], abs=2)

    device.write(124, {"OutWRte": 20.0, "StorCtl_Mod": 2})
    reading = device.reading()
    assert reading.grid_mode == "DISCHARGE"
    assert reading.battery_power_w == pytest.approx(1000, abs=2)


def test_read_only_points_and_missing_devices_are_refused(device, simulator):
    device.discover()
    with pytest.raises(InverterError, match="not writable"):
        device.write(124, {"ChaState": 10.0})
    # A write the device itself refuses: model 103 is read-only on the simulator.
    response = device.client.write_registers(device.models[103] + 12, [1], device_id=3)
    assert response.isError()
    offline = ModbusTcpClient("127.0.0.1", port=free_port(), timeout=0.5, retries=0)
    with pytest.raises(InverterError, match="no SunSpec marker"):
        SunSpecDevice(offline, 1, sunspec_map()).discover()
