"""Storing node inventories (`nodes/{id}/inventory`, contract/inventory.py): the
current one per node in `node_inventory`, and a `node_inventory_history` row for each
change, with what changed and the tenant it was recorded under (migrations 0018, 0022);
the newest MAX_HISTORY_ROWS_PER_NODE of each node's are kept.

Runs in the batch writer's transaction. Idempotent: the newest report by the node's own
clock wins, so a redelivered or late report (retained, or from another collector of the
shared subscription) changes nothing, and a report equal to the current one only moves
its times forward.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from contract.inventory import NodeInventory

# The history a node keeps: an honest node changes a few times a year, so this bound
# only meets a flapping or hostile one, whose oldest rows go (counted:
# wattfleet_collector_inventory_history_pruned_total) rather than the table growing
# without end.
MAX_HISTORY_ROWS_PER_NODE = 1_000
SELECT_CURRENT = "SELECT reported_at, inventory FROM node_inventory WHERE node_id = %s FOR UPDATE"
UPSERT = """
INSERT INTO node_inventory (node_id, reported_at, received_at, manufacturer, model, options,
    firmware, serial, inverter_sunspec_model, battery_sunspec_model, battery_capacity_wh,
    battery_capacity_ah, battery_max_charge_w, battery_max_discharge_w, meter_sunspec_model,
    agent_version, python_version, os, inventory)
VALUES (%(node_id)s, %(reported_at)s, %(received_at)s, %(manufacturer)s, %(model)s,
    %(options)s, %(firmware)s, %(serial)s, %(inverter_sunspec_model)s,
    %(battery_sunspec_model)s, %(battery_capacity_wh)s, %(battery_capacity_ah)s,
    %(battery_max_charge_w)s, %(battery_max_discharge_w)s, %(meter_sunspec_model)s,
    %(agent_version)s, %(python_version)s, %(os)s, %(inventory)s)
ON CONFLICT (node_id) DO UPDATE SET
    reported_at = EXCLUDED.reported_at, received_at = EXCLUDED.received_at,
    manufacturer = EXCLUDED.manufacturer, model = EXCLUDED.model, options = EXCLUDED.options,
    firmware = EXCLUDED.firmware, serial = EXCLUDED.serial,
    inverter_sunspec_model = EXCLUDED.inverter_sunspec_model,
    battery_sunspec_model = EXCLUDED.battery_sunspec_model,
    battery_capacity_wh = EXCLUDED.battery_capacity_wh,
    battery_capacity_ah = EXCLUDED.battery_capacity_ah,
    battery_max_charge_w = EXCLUDED.battery_max_charge_w,
    battery_max_discharge_w = EXCLUDED.battery_max_discharge_w,
    meter_sunspec_model = EXCLUDED.meter_sunspec_model,
    agent_version = EXCLUDED.agent_version, python_version = EXCLUDED.python_version,
    os = EXCLUDED.os, inventory = EXCLUDED.inventory
"""
INSERT_HISTORY = """
INSERT INTO node_inventory_history (node_id, tenant_id, changed_at, received_at, changes,
    inventory)
VALUES (%s, %s, %s, %s, %s, %s)
"""
PRUNE_HISTORY = """
DELETE FROM node_inventory_history WHERE id IN (
    SELECT id FROM node_inventory_history WHERE node_id = %s
    ORDER BY changed_at DESC, id DESC OFFSET %s)
"""


def flatten(document: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Leaf values by dotted path (`inverter.firmware`); a null part is one null leaf."""
    leaves: dict[str, Any] = {}
    for key, value in document.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            leaves.update(flatten(value, f"{path}."))
        else:
            leaves[path] = value
    return leaves


def changes(before: dict[str, Any] | None, after: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """What differs between two inventories' contents, by dotted path: {"from", "to"}
    (a path missing on one side is null there). Everything, against no inventory."""
    old, new = flatten(before or {}), flatten(after)
    return {
        path: {"from": old.get(path), "to": new.get(path)}
        for path in sorted(old.keys() | new.keys())
        if old.get(path) != new.get(path)
    }


def _columns(inventory: NodeInventory) -> dict[str, Any]:
    inverter, battery, meter, agent = (
        inventory.inverter,
        inventory.battery,
        inventory.meter,
        inventory.agent,
    )
    return {
        "manufacturer": inverter.manufacturer,
        "model": inverter.model,
        "options": inverter.options,
        "firmware": inverter.firmware,
        "serial": inverter.serial,
        "inverter_sunspec_model": inverter.sunspec_model,
        "battery_sunspec_model": battery.sunspec_model if battery else None,
        "battery_capacity_wh": battery.capacity_wh if battery else None,
        "battery_capacity_ah": battery.capacity_ah if battery else None,
        "battery_max_charge_w": battery.max_charge_w if battery else None,
        "battery_max_discharge_w": battery.max_discharge_w if battery else None,
        "meter_sunspec_model": meter.sunspec_model if meter else None,
        "agent_version": agent.version,
        "python_version": agent.python,
        "os": agent.os,
    }


def record_inventory(
    cur: psycopg.Cursor[Any], inventory: NodeInventory, tenant_id: int, received_at: datetime
) -> int:
    """Makes the report the node's current inventory unless a report as new or newer
    is stored; adds a history row, under the node's tenant now (`tenant_id`: it stays
    there if the node moves), when its content differs, and drops the node's oldest
    beyond MAX_HISTORY_ROWS_PER_NODE. Returns how many it dropped."""
    current = cur.execute(SELECT_CURRENT, (inventory.node_id,)).fetchone()
    if current is not None and current[0] >= inventory.ts:
        return 0
    content = inventory.content()
    changed = changes(None if current is None else current[1], content)
    cur.execute(
        UPSERT,
        {
            "node_id": inventory.node_id,
            "reported_at": inventory.ts,
            "received_at": received_at,
            **_columns(inventory),
            "inventory": Jsonb(content),
        },
    )
    if not changed:
        return 0
    cur.execute(
        INSERT_HISTORY,
        (
            inventory.node_id,
            tenant_id,
            inventory.ts,
            received_at,
            Jsonb(changed),
            Jsonb(content),
        ),
    )
    cur.execute(PRUNE_HISTORY, (inventory.node_id, MAX_HISTORY_ROWS_PER_NODE))
    return cur.rowcount
