"""Reading what the agent talks to: the inverter's identity (SunSpec common model 1),
the battery's nameplate, the grid meter's model, and the agent's own version, Python
and OS, as the contract's `NodeInventory` (contract/inventory.py).

The battery's nameplate comes from the battery model 802 when the device has it, else
from the storage model 124 (its maximum charge rate only). Device text is cleaned where
it enters: empty points are None (edge/registers.py reads a string of all 0xFFFF as
empty too), and characters that are not printable become U+FFFD,
so an odd byte in a serial number does not cost the whole report.
"""

from __future__ import annotations

import logging
import platform
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from contract.inventory import (
    AgentInventory,
    BatteryInventory,
    InverterInventory,
    MeterInventory,
    NodeInventory,
)
from contract.text import printable
from edge.inverter import INVERTER_MODELS, METER_MODELS, InverterError, SunSpecDevice

log = logging.getLogger(__name__)


def _text(value: Any, max_length: int) -> str | None:
    if not isinstance(value, str):
        return None
    cleaned = printable(value).strip()
    return cleaned[:max_length] or None


def agent_inventory(agent_version: str) -> AgentInventory:
    return AgentInventory(
        version=agent_version[:64],
        python=platform.python_version()[:32],
        os=platform.platform()[:128],
    )


def _battery(device: SunSpecDevice) -> BatteryInventory | None:
    """The nameplate, None when the device has no storage model or rates it out of
    bounds (logged: the rest of the inventory still goes). A capacity rated 0 is no
    rating, not a battery holding nothing: None too."""
    try:
        if 802 in device.models:
            m = device.read_model(802)
            return BatteryInventory(
                sunspec_model=802,
                capacity_wh=m.get("WHRtg") or None,
                capacity_ah=m.get("AHRtg") or None,
                max_charge_w=m.get("WChaRteMax"),
                max_discharge_w=m.get("WDisChaRteMax"),
            )
        if 124 in device.models:
            return BatteryInventory(
                sunspec_model=124, max_charge_w=device.read_model(124).get("WChaMax")
            )
    except ValidationError as exc:
        log.warning("battery nameplate left out of the inventory: %s", exc.errors()[0]["msg"])
    return None


def read_inventory(
    device: SunSpecDevice, node_id: str, now: datetime, agent: AgentInventory
) -> NodeInventory:
    """The node's inventory as the device answers now. Raises InverterError if the
    device does not answer or has no inverter model."""
    if not device.models:
        device.discover()
    inverter_id = next((m for m in INVERTER_MODELS if m in device.models), None)
    if inverter_id is None:
        raise InverterError("no inverter model (101/103) on this device")
    common = device.read_model(1) if 1 in device.models else {}
    meter_id = next((m for m in METER_MODELS if m in device.models), None)
    return NodeInventory(
        node_id=node_id,
        ts=now,
        inverter=InverterInventory(
            manufacturer=_text(common.get("Mn"), 32),
            model=_text(common.get("Md"), 32),
            options=_text(common.get("Opt"), 16),
            firmware=_text(common.get("Vr"), 16),
            serial=_text(common.get("SN"), 32),
            sunspec_model=inverter_id,
        ),
        battery=_battery(device),
        meter=None if meter_id is None else MeterInventory(sunspec_model=meter_id),
        agent=agent,
    )
