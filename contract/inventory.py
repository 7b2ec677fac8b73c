"""A node's device inventory: what it is talking to, published on `nodes/{id}/inventory`.

The agent reads it from the inverter's SunSpec models (common model 1 for the
inverter's identity, the battery model 802 or else the storage model 124 for the
battery's nameplate, a meter model 201-204 when one is on the chain) and adds its own
version, Python and OS. It publishes it retained, once on each connection and whenever
it changes (a firmware update on the inverter); the collector stores the current one
and a history row per change (collector/inventory.py, migration 0018).

Everything in it comes from the device or the Pi, so it is bounded like any payload:
strict types (a number is a JSON number, not a string), every text short and printable
(no control characters, NUL or lone surrogates), every number in a physical range, no
unknown keys, and at most MAX_INVENTORY_BYTES of JSON.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from contract.fields import MAX_POWER_W, NodeId
from contract.node_time import NodeTime
from contract.text import PRINTABLE

# A full inventory is a few hundred bytes; the hub reads none larger.
MAX_INVENTORY_BYTES = 4_096
# The largest home or small-business battery this contract accepts: 10 MWh.
MAX_CAPACITY_WH = 10_000_000.0
MAX_CAPACITY_AH = 1_000_000.0


# SunSpec common model 1 strings are 16 or 32 bytes; the agent's texts a little longer.
Text16 = Annotated[str, StringConstraints(min_length=1, max_length=16), PRINTABLE]
Text32 = Annotated[str, StringConstraints(min_length=1, max_length=32), PRINTABLE]
Text64 = Annotated[str, StringConstraints(min_length=1, max_length=64), PRINTABLE]
Text128 = Annotated[str, StringConstraints(min_length=1, max_length=128), PRINTABLE]
PowerRating = Annotated[float, Field(ge=0, le=MAX_POWER_W)]

_CONFIG = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


class InverterInventory(BaseModel):
    """SunSpec common model 1 (null: the device leaves the point empty), and the
    inverter model (101 single phase, 103 three phase) the agent reads."""

    model_config = _CONFIG

    manufacturer: Text32 | None = None  # Mn
    model: Text32 | None = None  # Md
    options: Text16 | None = None  # Opt
    firmware: Text16 | None = None  # Vr
    serial: Text32 | None = None  # SN
    sunspec_model: Literal[101, 103]


class BatteryInventory(BaseModel):
    """The battery's nameplate: from the battery model 802 (AHRtg, WHRtg, WChaRteMax,
    WDisChaRteMax) when the device has it, else from the storage model 124, which
    carries only the maximum charge rate (WChaMax). Null: not on the device."""

    model_config = _CONFIG

    sunspec_model: Literal[124, 802]
    capacity_wh: Annotated[float, Field(ge=0, le=MAX_CAPACITY_WH)] | None = None
    capacity_ah: Annotated[float, Field(ge=0, le=MAX_CAPACITY_AH)] | None = None
    max_charge_w: PowerRating | None = None
    max_discharge_w: PowerRating | None = None


class MeterInventory(BaseModel):
    """The grid meter's SunSpec model: 201 single phase, 202 split phase, 203 wye, 204
    delta."""

    model_config = _CONFIG

    sunspec_model: Literal[201, 202, 203, 204]


class AgentInventory(BaseModel):
    model_config = _CONFIG

    version: Text64
    python: Text32
    os: Text128


class NodeInventory(BaseModel):
    """What a node publishes, retained, on `nodes/{node_id}/inventory`; `ts`: when it
    read it (its clock). Sent only once the inverter answered: an inventory without
    one would read as the inverter gone."""

    model_config = _CONFIG

    node_id: NodeId
    ts: NodeTime
    inverter: InverterInventory
    battery: BatteryInventory | None = None
    meter: MeterInventory | None = None
    agent: AgentInventory

    def content(self) -> dict[str, object]:
        """The inventory without when and by whom it was sent: two reports with equal
        content describe the same devices."""
        return self.model_dump(mode="json", exclude={"node_id", "ts"})
