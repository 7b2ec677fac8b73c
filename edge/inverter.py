"""Reading and controlling a SunSpec inverter over Modbus (pymodbus, sync client).

Discovery finds the "SunS" marker at one of the map's base addresses and walks the model
chain; readings apply each point's scale factor. The site's power flows come from:
- PV: the MPPT model's strings (160), else the inverter's DC power (103 DCW);
- battery: inverter AC power minus PV (a hybrid inverter's AC side carries both);
- grid: the first meter model (201-204), + import / - export;
- load: inverter AC power plus grid power;
- lifetime energy counters (acc32, Wh): PV from the MPPT strings' DCWH summed, grid
  import and export from the meter's TotWhImp / TotWhExp.
contract/fields.py lists, per telemetry field, the points it comes from.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from pymodbus.client import ModbusBaseSyncClient
from pymodbus.exceptions import ModbusException

from edge.registers import END_MODEL_ID, SUNS_MARKER, RegisterMap, decode, encode

MAX_READ = 125  # registers per Modbus read request
INVERTER_MODELS = (103, 101)
METER_MODELS = (201, 202, 203, 204)
# The storage model's StorCtl_Mod as the contract's grid mode; anything else is AUTO.
STORAGE_MODES = {1: "FORCE_CHARGE", 2: "DISCHARGE"}


# An acc32 point counts up to 2^32 - 1 raw and wraps to 0.
ACC32_RANGE = 2**32


class InverterError(Exception):
    """The device did not answer, answered with an error, or is not SunSpec."""


@dataclass(frozen=True)
class Counter:
    """A lifetime energy counter's value, and the span it wraps back to 0 after (2^32
    raw units, times its scale factor)."""

    wh: float
    wraps_at_wh: float


@dataclass(frozen=True)
class Reading:
    """One poll of the device, in the contract's units and sign conventions; each power
    is named as its telemetry column (contract/fields.py). A counter is None when the
    device has none (or does not implement it)."""

    soc_percent: float | None
    battery_voltage: float | None
    battery_power_w: float | None
    solar_power_w: float | None
    grid_power_w: float | None
    load_power_w: float | None
    grid_mode: str
    pv_counter: Counter | None = None
    grid_import_counter: Counter | None = None
    grid_export_counter: Counter | None = None


def _counter(value: Any, scale: Any) -> Counter | None:
    if value is None or scale is None:
        return None
    return Counter(float(value), ACC32_RANGE * 10.0 ** int(scale))


def _pv_counter(mppt: dict[str, Any]) -> Counter | None:
    """The strings' DCWH summed; None unless every string has one. One string wrapping
    takes one range off the sum, so the sum wraps at one string's range."""
    counters = [_counter(m.get("DCWH"), mppt.get("DCWH_SF")) for m in mppt["modules"]]
    present = [c for c in counters if c is not None]
    if not present or len(present) < len(counters):
        return None
    return Counter(sum(c.wh for c in present), present[0].wraps_at_wh)


class SunSpecDevice:
    """One device on a bus. Requests are serialized by the bus lock and spaced by
    `frame_gap_s`, so the poller and command handlers can share the device."""

    def __init__(
        self,
        client: ModbusBaseSyncClient,
        unit_id: int,
        regmap: RegisterMap,
        frame_gap_s: float = 0.0,
        bus_lock: threading.Lock | None = None,
    ) -> None:
        self.client = client
        self.unit_id = unit_id
        self.regmap = regmap
        self.frame_gap_s = frame_gap_s
        self.bus_lock = bus_lock or threading.Lock()
        self.models: dict[int, int] = {}  # model id -> address of its first point
        self._last_frame = 0.0

    def _request(self, call: Callable[[], Any], what: str) -> Any:
        with self.bus_lock:
            wait = self._last_frame + self.frame_gap_s - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            try:
                response = call()
            except ModbusException as exc:
                raise InverterError(f"{what}: {exc}") from exc
            finally:
                self._last_frame = time.monotonic()
        if response.isError():
            raise InverterError(f"{what}: device answered {response}")
        return response

    def _read(self, address: int, count: int) -> list[int]:
        registers: list[int] = []
        while count > 0:
            n = min(count, MAX_READ)
            response = self._request(
                partial(
                    self.client.read_holding_registers, address, count=n, device_id=self.unit_id
                ),
                f"read {address}+{n}",
            )
            registers += response.registers
            address, count = address + n, count - n
        return registers

    def discover(self) -> dict[int, int]:
        """Finds the SunSpec marker and the model chain; raises InverterError if absent."""
        for base in self.regmap.markers:
            try:
                if tuple(self._read(base, 2)) != SUNS_MARKER:
                    continue
            except InverterError:
                continue
            models: dict[int, int] = {}
            address = base + 2
            for _ in range(100):  # a chain is never this long: a corrupt one stops here
                model_id, length = self._read(address, 2)
                if model_id == END_MODEL_ID:
                    self.models = models
                    return models
                models[model_id] = address + 2
                address += 2 + length
            raise InverterError(f"SunSpec chain at {base} does not end")
        raise InverterError(f"no SunSpec marker at {self.regmap.markers}")

    def read_model(self, model_id: int) -> dict[str, Any]:
        """Every mapped point of a model, scaled; a repeating block as `modules`."""
        model = self.regmap.models[model_id]
        regs = self._read(self.models[model_id], model.length)

        def scale_of(name: str | None, points: dict[str, Any]) -> int | None:
            if name is None:
                return None
            sf = decode(points[name], regs[points[name].offset : points[name].offset + 1])
            return None if sf is None else int(sf)

        values: dict[str, Any] = {}
        for name, point in model.points.items():
            raw = regs[point.offset : point.offset + point.width]
            values[name] = decode(point, raw, scale_of(point.sf, model.points))
        if model.repeating is not None:
            block, modules = model.repeating, []
            count = int(values.get("N") or 0)
            for i in range(count):
                start = block.start + i * block.size
                if start + block.size > len(regs):
                    break
                modules.append(
                    {
                        name: decode(
                            p,
                            regs[start + p.offset : start + p.offset + p.width],
                            scale_of(p.sf, model.points),
                        )
                        for name, p in block.points.items()
                    }
                )
            values["modules"] = modules
        return values

    def write(self, model_id: int, values: dict[str, float]) -> None:
        """Writes writable points (scaled with the device's own factors)."""
        model = self.regmap.models[model_id]
        current = self.read_model(model_id)
        for name, value in values.items():
            point = model.points[name]
            if not point.writable:
                raise InverterError(f"{model.name}.{name} is not writable")
            scale = int(current[point.sf]) if point.sf and current[point.sf] is not None else 0
            registers = encode(point, value, scale)
            address = self.models[model_id] + point.offset
            self._request(
                partial(self.client.write_registers, address, registers, device_id=self.unit_id),
                f"write {model.name}.{name}",
            )

    def reading(self) -> Reading:
        """Polls every model wattfleet uses; discovers the chain first if needed."""
        if not self.models:
            self.discover()
        inverter_id = next((m for m in INVERTER_MODELS if m in self.models), None)
        if inverter_id is None:
            raise InverterError("no inverter model (101/103) on this device")
        inverter = self.read_model(inverter_id)
        storage = self.read_model(124) if 124 in self.models else {}
        pv = inverter.get("DCW")
        pv_counter = None
        if 160 in self.models:
            mppt = self.read_model(160)
            strings = [m["DCW"] for m in mppt["modules"] if m["DCW"] is not None]
            pv = sum(strings) if strings else pv
            pv_counter = _pv_counter(mppt)
        meter_id = next((m for m in METER_MODELS if m in self.models), None)
        meter = self.read_model(meter_id) if meter_id is not None else {}
        grid = meter.get("W")
        ac = inverter.get("W")
        return Reading(
            soc_percent=storage.get("ChaState"),
            battery_voltage=storage.get("InBatV"),
            battery_power_w=None if ac is None or pv is None else ac - pv,
            solar_power_w=pv,
            grid_power_w=grid,
            load_power_w=None if ac is None or grid is None else ac + grid,
            grid_mode=STORAGE_MODES.get(int(storage.get("StorCtl_Mod") or 0), "AUTO"),
            pv_counter=pv_counter,
            grid_import_counter=_counter(meter.get("TotWhImp"), meter.get("TotWh_SF")),
            grid_export_counter=_counter(meter.get("TotWhExp"), meter.get("TotWh_SF")),
        )
