"""MQTT topic names (docs/architecture.md; payloads in telemetry.py and commands.py)."""

from __future__ import annotations

import re

BROADCAST = "hub/broadcast"
SHARED_GROUP = "collector"

# A node id is also its MQTT username, so it must never contain topic syntax.
NODE_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
_NODE_ID = re.compile(NODE_ID_PATTERN)

KINDS = ("telemetry", "status", "commands", "acks", "logs", "ingested", "config", "inventory")


def node_topic(node_id: str, kind: str) -> str:
    """`nodes/{node_id}/{kind}`; raises ValueError for an unknown kind or unsafe id."""
    if kind not in KINDS:
        raise ValueError(f"unknown topic kind {kind!r}")
    if not _NODE_ID.match(node_id):
        raise ValueError(f"invalid node id {node_id!r}")
    return f"nodes/{node_id}/{kind}"


def telemetry(node_id: str) -> str:
    return node_topic(node_id, "telemetry")


def status(node_id: str) -> str:
    return node_topic(node_id, "status")


def commands(node_id: str) -> str:
    return node_topic(node_id, "commands")


def acks(node_id: str) -> str:
    return node_topic(node_id, "acks")


def logs(node_id: str) -> str:
    return node_topic(node_id, "logs")


def ingested(node_id: str) -> str:
    """Where the collectors confirm the node's samples they committed (confirmations.py)."""
    return node_topic(node_id, "ingested")


def config(node_id: str) -> str:
    """Where the node reports the config it runs, retained (node_config.ReportedConfig)."""
    return node_topic(node_id, "config")


def inventory(node_id: str) -> str:
    """Where the node reports what it is talking to, retained (inventory.NodeInventory)."""
    return node_topic(node_id, "inventory")


def all_nodes(kind: str) -> str:
    """`nodes/+/{kind}`: every node's topic of this kind."""
    if kind not in KINDS:
        raise ValueError(f"unknown topic kind {kind!r}")
    return f"nodes/+/{kind}"


def shared_subscription(kind: str, group: str = SHARED_GROUP) -> str:
    """The `$share/{group}/nodes/+/{kind}` filter collectors split the load on."""
    if kind not in KINDS:
        raise ValueError(f"unknown topic kind {kind!r}")
    return f"$share/{group}/nodes/+/{kind}"


def parse_node_topic(topic: str) -> tuple[str, str] | None:
    """(node_id, kind) for a `nodes/{id}/{kind}` topic, None for anything else."""
    parts = topic.split("/")
    if len(parts) != 3 or parts[0] != "nodes" or parts[2] not in KINDS:
        return None
    if not _NODE_ID.match(parts[1]):
        return None
    return parts[1], parts[2]
