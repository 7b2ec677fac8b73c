"""A SunSpec register image of a simulated hybrid inverter, served by pymodbus.

Models, in chain order after "SunS" at 40000: 1 (common), 103 (inverter), 124 (storage),
802 (battery nameplate), 160 (MPPT, two strings), 203 (grid meter), end. Every read
refreshes the dynamic points from the site physics, and the common model's firmware
version from `SimulatedInverter.firmware` (a test changes it to play a firmware
update); writes are accepted only on model 124's writable controls, and the physics
follows them from the next read on. The lifetime energy counters (103 WH,
160 DCWH per string, 203 TotWhImp / TotWhExp) integrate the simulated powers between
reads, starting from seeded lifetime totals, and wrap as acc32 points do.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from pymodbus.constants import ExcCodes
from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from edge.inverter import ACC32_RANGE
from edge.registers import (
    END_MODEL_ID,
    SUNS_MARKER,
    Point,
    RegisterMap,
    decode,
    encode,
    sunspec_map,
)
from edge.simulator.site import Site

BASE = 40_000
CHAIN = (1, 103, 124, 802, 160, 203)
# Fixed scale factors of this device (10^sf).
SCALES = {
    "ChaState_SF": -1,
    "InBatV_SF": -1,
    "InOutWRte_SF": -1,
    "MinRsvPct_SF": -1,
    "AHRtg_SF": -1,
    "WHRtg_SF": 1,
}
MANUFACTURER = "wattfleet"
MODEL = "simulated hybrid"
OPTIONS = "battery"
FIRMWARE = "1.0.0"
# The battery's nominal voltage, for its amp-hour rating.
NOMINAL_BATTERY_V = 51.2
# Each string's share of the PV power.
STRING_SHARES = (0.6, 0.4)
STORCTL_CHARGE, STORCTL_DISCHARGE = 0b01, 0b10
CHAST_DISCHARGING, CHAST_CHARGING, CHAST_HOLDING = 3, 4, 6


class SunSpecImage:
    """Registers from BASE on, and where each model's points live."""

    def __init__(self, regmap: RegisterMap, serial: str, site: Site) -> None:
        self.regmap = regmap
        self.starts: dict[int, int] = {}
        regs = list(SUNS_MARKER)
        for model_id in CHAIN:
            length = regmap.models[model_id].length
            regs += [model_id, length]
            self.starts[model_id] = BASE + len(regs)
            regs += [0] * length
        regs += [END_MODEL_ID, 0]
        self.registers = regs
        self.writable = {
            self.starts[124] + p.offset for p in regmap.models[124].points.values() if p.writable
        }
        for model_id in CHAIN:
            for name, point in regmap.models[model_id].points.items():
                if point.type == "sunssf":
                    self.set(self.registers, model_id, name, SCALES.get(name, 0))
        self.set(self.registers, 1, "Mn", MANUFACTURER)
        self.set(self.registers, 1, "Md", MODEL)
        self.set(self.registers, 1, "Opt", OPTIONS)
        self.set(self.registers, 1, "Vr", FIRMWARE)
        self.set(self.registers, 1, "SN", serial)
        self.set(self.registers, 802, "WHRtg", site.capacity_wh)
        self.set(self.registers, 802, "AHRtg", site.capacity_wh / NOMINAL_BATTERY_V)
        self.set(self.registers, 802, "WChaRteMax", site.max_battery_w)
        self.set(self.registers, 802, "WDisChaRteMax", site.max_battery_w)
        self.set(self.registers, 160, "N", len(STRING_SHARES))
        self.set(self.registers, 103, "St", 4)  # MPPT: producing
        self.set(self.registers, 103, "Evt1", 0)

    def _locate(self, model_id: int, name: str, module: int | None) -> tuple[int, Point]:
        model = self.regmap.models[model_id]
        if module is None:
            point = model.points[name]
            return self.starts[model_id] + point.offset, point
        assert model.repeating is not None
        point = model.repeating.points[name]
        start = self.starts[model_id] + model.repeating.start + module * model.repeating.size
        return start + point.offset, point

    def _scale(self, registers: list[int], model_id: int, sf: str | None) -> int:
        if sf is None:
            return 0
        address = self.starts[model_id] + self.regmap.models[model_id].points[sf].offset
        raw = registers[address - BASE]
        return raw - 0x10000 if raw >= 0x8000 else raw

    def set(
        self,
        registers: list[int],
        model_id: int,
        name: str,
        value: float | str | None,
        module: int | None = None,
    ) -> None:
        address, point = self._locate(model_id, name, module)
        encoded = encode(point, value, self._scale(registers, model_id, point.sf))
        registers[address - BASE : address - BASE + len(encoded)] = encoded

    def get(self, registers: list[int], model_id: int, name: str) -> float | str | None:
        address, point = self._locate(model_id, name, None)
        raw = registers[address - BASE : address - BASE + point.width]
        return decode(point, raw, self._scale(registers, model_id, point.sf))


def acc32(wh: float) -> int:
    """An acc32 register's value (scale 0) for a count in Wh: wrapped at 2^32, and kept
    off 0, which SunSpec reads as "not implemented", and off the top, which encode refuses."""
    return min(max(round(wh) % ACC32_RANGE, 1), ACC32_RANGE - 2)


class SimulatedInverter:
    def __init__(
        self, site: Site, unit_id: int = 1, clock: Callable[[], float] = time.time
    ) -> None:
        self.site = site
        self.unit_id = unit_id
        self.clock = clock
        self.image = SunSpecImage(sunspec_map(), f"SIM-{site.seed:06d}", site)
        # The firmware version the common model shows (Vr) from the next read on.
        self.firmware = FIRMWARE
        self.energy_wh = 0.0
        # Lifetime counters, Wh (a test may set them, e.g. near the wrap).
        self.string_wh = [1_000_000.0 * (i + 1) + site.seed for i in range(len(STRING_SHARES))]
        self.grid_import_wh = 2_000_000.0 + site.seed
        self.grid_export_wh = 3_000_000.0 + site.seed
        # The site coordinator's plan: charge at this % of the battery's maximum, or None.
        self.planned_charge_percent: float | None = None
        self._last_s: float | None = None

    def device(self) -> SimDevice:
        """The pymodbus device: writable control registers, everything else read-only."""
        regs, blocks, start = self.image.registers, [], 0
        for i in range(1, len(regs) + 1):
            if i == len(regs) or ((BASE + i) in self.image.writable) != (
                (BASE + start) in self.image.writable
            ):
                writable = (BASE + start) in self.image.writable
                blocks.append(
                    SimData(
                        BASE + start,
                        values=regs[start:i],
                        datatype=DataType.REGISTERS,
                        readonly=not writable,
                    )
                )
                start = i
        return SimDevice(id=self.unit_id, simdata=blocks, action=self._on_access)

    async def _on_access(
        self,
        _function_code: int,
        start_address: int,
        _address: int,
        _count: int,
        registers: list[int],
        values: list[int] | list[bool] | None,
    ) -> ExcCodes | None:
        assert start_address == BASE
        if values is None:
            self.refresh(registers)
        return None

    def _apply_controls(self, registers: list[int]) -> None:
        img = self.image
        mode_bits = int(img.get(registers, 124, "StorCtl_Mod") or 0)
        if mode_bits & STORCTL_CHARGE:
            self.site.controls.mode = "CHARGE"
            self.site.controls.rate_percent = float(img.get(registers, 124, "InWRte") or 0)
        elif mode_bits & STORCTL_DISCHARGE:
            self.site.controls.mode = "DISCHARGE"
            self.site.controls.rate_percent = float(img.get(registers, 124, "OutWRte") or 0)
        elif self.planned_charge_percent is not None:
            # The storage controls (the hub's commands) come first, then the coordinator.
            self.site.controls.mode = "CHARGE"
            self.site.controls.rate_percent = self.planned_charge_percent
        else:
            self.site.controls.mode = "AUTO"

    def follow(self, charge: bool, rate_percent: float) -> None:
        """The site coordinator's decision: charge from the grid at `rate_percent` of the
        battery's maximum power, or (False) self-consumption."""
        self.planned_charge_percent = rate_percent if charge else None

    def refresh(self, registers: list[int]) -> None:
        """Steps the physics to now and writes every dynamic point."""
        self._apply_controls(registers)
        now = self.clock()
        snap = self.site.step(now)
        ac_w = snap.pv_w + snap.battery_w
        strings_w = [round(snap.pv_w * share, 1) for share in STRING_SHARES]
        if self._last_s is not None and now > self._last_s:
            hours = (now - self._last_s) / 3600
            self.energy_wh += max(0.0, ac_w) * hours
            self.grid_import_wh += max(0.0, snap.grid_w) * hours
            self.grid_export_wh += max(0.0, -snap.grid_w) * hours
            for i, string_w in enumerate(strings_w):
                self.string_wh[i] += string_w * hours
        self._last_s = now
        img, site = self.image, self.site
        img.set(registers, 1, "Vr", self.firmware)
        img.set(registers, 103, "W", ac_w)
        img.set(registers, 103, "DCW", snap.pv_w)
        img.set(registers, 103, "WH", acc32(self.energy_wh))
        img.set(registers, 124, "WChaMax", site.max_battery_w)
        img.set(registers, 124, "ChaState", snap.soc_percent)
        img.set(registers, 124, "InBatV", 48 + snap.soc_percent * 0.08)
        state = (
            CHAST_CHARGING
            if snap.battery_w < 0
            else CHAST_DISCHARGING
            if snap.battery_w > 0
            else CHAST_HOLDING
        )
        img.set(registers, 124, "ChaSt", state)
        for i, string_w in enumerate(strings_w):
            img.set(registers, 160, "DCW", string_w, module=i)
            img.set(registers, 160, "DCWH", acc32(self.string_wh[i]), module=i)
        img.set(registers, 203, "W", snap.grid_w)
        img.set(registers, 203, "TotWhImp", acc32(self.grid_import_wh))
        img.set(registers, 203, "TotWhExp", acc32(self.grid_export_wh))

    def counters_wh(self) -> dict[str, int]:
        """The counters as the registers show them now (raw Wh, wrapped)."""
        return {
            "pv": sum(acc32(wh) for wh in self.string_wh),
            "grid_import": acc32(self.grid_import_wh),
            "grid_export": acc32(self.grid_export_wh),
        }

    def server(self, host: str, port: int) -> ModbusTcpServer:
        self.refresh(self.image.registers)
        return ModbusTcpServer(self.device(), address=(host, port))

    def serial_server(self, device: str, baudrate: int) -> ModbusSerialServer:
        """The same device over Modbus RTU on a serial line (a real port or a pty)."""
        self.refresh(self.image.registers)
        return ModbusSerialServer(self.device(), port=device, baudrate=baudrate)
