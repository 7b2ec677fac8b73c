"""Node configs as the hub stores and pushes them: validated against the node config of
the wire contract (`contract.node_config.NodeConfig`, the model the agent's settings are
built from), versioned per node, with secrets left out; and the config each node reports
it runs (control_api/config_intake.py), which is what `current` answers with.

The node's broker password and command key never travel in a config push: the agent
keeps the ones it has (edge/config_push.py), so they are neither stored here nor sent
through the broker.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import ValidationError
from sqlalchemy import Connection, text

from contract.node_config import (
    MAX_REPORTED_CONFIG_BYTES,
    NODE_HELD_SECRETS,
    NodeConfig,
    ReportedConfig,
    effective_config,
)
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


# What a report adds around the config ({"version", "ts", "config"}), generously.
REPORT_ENVELOPE_BYTES = 128


def validate_pushed_config(node_id: str, config: dict[str, Any]) -> dict[str, Any]:
    """`validate_node_config`, and a config the node can report back once it runs it: at
    most MAX_REPORTED_CONFIG_BYTES as the agent reports it (a larger report is dropped,
    and the hub would never learn what the node runs)."""
    config = validate_node_config(node_id, config)
    reported = effective_config(NodeConfig.model_validate(config))
    size = len(json.dumps(reported)) + REPORT_ENVELOPE_BYTES
    if size > MAX_REPORTED_CONFIG_BYTES:
        raise NodeConfigError(
            f"invalid config: about {size} bytes as the node reports it, over"
            f" {MAX_REPORTED_CONFIG_BYTES} (tariffs: fewer periods or scheduled versions)"
        )
    return config


# A node config is flat: no patch needs more nesting than this, and recursion stays
# bounded.
MAX_PATCH_DEPTH = 8


def merge_patch(target: Any, patch: Any, depth: int = 0) -> Any:
    """`target` with the JSON merge patch (RFC 7396) applied: a key set to null is
    removed (its default applies again), an object merged key by key, anything else
    replaces. NodeConfigError for a patch nested deeper than MAX_PATCH_DEPTH."""
    if not isinstance(patch, dict):
        return patch
    if depth >= MAX_PATCH_DEPTH:
        raise NodeConfigError(f"invalid config: patch nested deeper than {MAX_PATCH_DEPTH}")
    merged = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = merge_patch(merged.get(key), value, depth + 1)
    return merged


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
    created_by: int | None,
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


def store_report(
    conn: Connection, node_id: str, report: ReportedConfig, config: dict[str, Any]
) -> bool:
    """Replaces the node's reported config (`config`: the report's, validated); False
    when there is no such node."""
    return bool(
        conn.execute(
            text(
                "INSERT INTO node_reported_configs (node_id, version, config, reported_at)"
                " SELECT id, :version, CAST(:config AS jsonb), :reported_at FROM nodes"
                " WHERE id = :node"
                " ON CONFLICT (node_id) DO UPDATE SET version = excluded.version,"
                " config = excluded.config, reported_at = excluded.reported_at,"
                " received_at = now()"
            ),
            {
                "node": node_id,
                "version": report.version,
                "config": json.dumps(config),
                "reported_at": report.ts,
            },
        ).rowcount
    )


def current(conn: Connection, node_id: str) -> dict[str, Any]:
    """The config the node last reported it runs (`source` "reported"); for an agent
    that predates reporting, the newest version pushed to it ("pushed"), which it may
    or may not have applied. NotFoundError when there is neither."""
    row = (
        conn.execute(
            text(
                "SELECT node_id, version, config, reported_at, received_at AS created_at"
                " FROM node_reported_configs WHERE node_id = :id"
            ),
            {"id": node_id},
        )
        .mappings()
        .first()
    )
    if row is not None:
        return {**row, "source": "reported", "command_id": None}
    try:
        pushed = latest(conn, node_id)
    except NotFoundError:
        raise NotFoundError(
            "this node has not reported its config (it never connected, or its agent"
            " predates config reports) and no config has been pushed to it"
        ) from None
    return {**pushed, "source": "pushed", "reported_at": None}
