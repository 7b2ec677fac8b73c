"""Storing node inventories (`nodes/{id}/inventory`, contract/inventory.py): the
current one per node in `node_inventory`, and a `node_inventory_history` row for each
change, with what changed and the tenant it was recorded under (migrations 0018, 0022);
the newest MAX_HISTORY_ROWS_PER_NODE of each node's are kept.

Runs in the batch writer's transaction. Idempotent: a report equal to the current one
only moves its times forward (never back), and a late copy of an earlier report
(retained, redelivered, or from another collector of the shared subscription) changes
nothing; any other report, even one whose `ts` is older than the stored one (the node's
clock stepped back), becomes the current inventory (record_inventory says why).
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
# The inventory the history says the node had at a time by its clock, if the history
# reaches that time (a row at it or later).
SELECT_HAD_AT = """
SELECT inventory FROM node_inventory_history
WHERE node_id = %(node_id)s AND changed_at <= %(ts)s AND EXISTS (
    SELECT 1 FROM node_inventory_history WHERE node_id = %(node_id)s AND changed_at >= %(ts)s)
ORDER BY changed_at DESC, id DESC LIMIT 1
"""
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
    """Makes the report the node's current inventory unless it is equal to the current
    one (then only a newer `ts` moves the times forward) or a late copy of an earlier
    report (_late_copy): a report with other content is applied whatever its `ts`; adds a
    history row, under the node's tenant now (`tenant_id`: it stays there if the node
    moves), when its content differs, and drops the node's oldest beyond
    MAX_HISTORY_ROWS_PER_NODE. Returns how many it dropped."""
    current = cur.execute(SELECT_CURRENT, (inventory.node_id,)).fetchone()
    content = inventory.content()
    # Equal content: only a newer report moves the times forward.
    if current is not None and (
        current[0] >= inventory.ts if current[1] == content else _late_copy(cur, inventory, content)
    ):
        return 0
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


def _late_copy(cur: psycopg.Cursor[Any], inventory: NodeInventory, content: Any) -> bool:
    """Whether a report whose content is not the current one is a late copy of one sent
    before the current one: the history reaches its `ts` (a change recorded then or
    later by the node's clock) and says the node had this content at that `ts`.

    Why not "the newest `ts` wins": a node's clock steps back (NTP correcting a clock
    that ran ahead, a Pi without a real-time clock restoring a saved time after a power
    cut), and every change it reported until its clock passed the stored `ts` again (a
    firmware update) would be hidden; the agent sends an unchanged inventory again only
    at its next connection. So a report is applied in arrival order unless it is one of
    those MQTT can deliver after a newer one:
    - a retained copy (at a plain subscribe) is the broker's newest for the topic, the
      current one: equal, a no-op;
    - a QoS 1 redelivery of a report committed but not acknowledged (a collector killed
      between the two) had its content recorded at its `ts`: a history row then, or
      the content was the same as before;
    - a report queued for another member of the shared subscription while it was
      offline (docs/operations.md) arrives when that member is back, after later
      reports were stored by others: the node had the same content at its `ts` unless
      it changed twice within that time.
    Each says what the history says the node had at its `ts`; a report that contradicts
    the history, or is newer than all of it, is new. What this gets wrong needs two rare
    things at once: a report queued between two changes, or after the last change when
    the node's clock then stepped back, is applied (until the node's next report newer
    than the history: its next connection); a rollback to a past version while the
    node's clock stands within that version's time again is ignored (as every report
    older than the current one was before)."""
    had = cur.execute(SELECT_HAD_AT, {"node_id": inventory.node_id, "ts": inventory.ts}).fetchone()
    return had is not None and had[0] == content
