"""Node configs as the hub stores and pushes them: validated against the node config of
the wire contract (`contract.node_config.NodeConfig`, the model the agent's settings are
built from), versioned per node, with secrets left out.

The node's broker password and command key never travel in a config push: the agent
keeps the ones it has (edge/config_push.py), so they are neither stored here nor sent
through the broker.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import ValidationError
from sqlalchemy import Connection, text

from contract.node_config import NODE_HELD_SECRETS, NodeConfig
from control_api.errors import InvalidError, NotFoundError


class NodeConfigError(InvalidError):
    """The config is not one the agent would accept; the message says where."""


def validate_node_config(node_id: str, config: dict[str, Any]) -> dict[str, Any]:
    """The config as given, once the contract's model accepts it for this node."""
    present = [key for key in NODE_HELD_SECRETS if key in config]
    if present:
        raise NodeConfigError(f"{', '.join(present)}: secrets stay on the node; leave them out")
    if config.get("node_id", node_id) != node_id:
        raise NodeConfigError(f"node_id must stay {node_id!r}")
    try:
        NodeConfig.model_validate({"node_id": node_id, **config})
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "config"
        raise NodeConfigError(f"invalid config: {where}: {first['msg']}") from exc
    return {"node_id": node_id, **config}


def next_version(conn: Connection, node_id: str) -> int:
    return int(
        conn.execute(
            text("SELECT coalesce(max(version), 0) + 1 FROM node_configs WHERE node_id = :id"),
            {"id": node_id},
        ).scalar_one()
    )


def insert(
    conn: Connection,
    node_id: str,
    version: int,
    config: dict[str, Any],
    command_id: str,
    created_by: int,
) -> None:
    """Stores a version, in the caller's transaction (that of the command pushing it)."""
    conn.execute(
        text(
            "INSERT INTO node_configs (node_id, version, config, command_id, created_by)"
            " VALUES (:node, :version, CAST(:config AS jsonb), :command, :user)"
        ),
        {
            "node": node_id,
            "version": version,
            "config": json.dumps(config),
            "command": command_id,
            "user": created_by,
        },
    )


def latest(conn: Connection, node_id: str) -> dict[str, Any]:
    """The newest version pushed to the node; NotFoundError when none was."""
    row = (
        conn.execute(
            text(
                "SELECT node_id, version, config, command_id, created_at FROM node_configs"
                " WHERE node_id = :id ORDER BY version DESC LIMIT 1"
            ),
            {"id": node_id},
        )
        .mappings()
        .first()
    )
    if row is None:
        raise NotFoundError("no config has been pushed to this node")
    return dict(row)
