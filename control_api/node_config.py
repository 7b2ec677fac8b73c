"""Node configs as the hub stores and pushes them: validated against the node config of
the wire contract (`contract.node_config.NodeConfig`, the model the agent's settings are
built from), with secrets left out.

The node's broker password and command key never travel in a config push: the agent
keeps the ones it has (edge/config_push.py), so they are neither stored here nor sent
through the broker.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from contract.node_config import NODE_HELD_SECRETS, NodeConfig


class NodeConfigError(Exception):
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
