"""Node configs as the hub stores and pushes them: validated against the edge agent's
own settings model (imported, not copied), with secrets left out.

The node's broker password and command key never travel in a config push: the agent
keeps the ones it has (edge/config_push.py), so they are neither stored here nor sent
through the broker.
"""

from __future__ import annotations

import secrets
from typing import Any

from pydantic import ValidationError

from edge.config import EdgeSettings

SECRET_KEYS = ("node_secret", "mqtt_password")


class NodeConfigError(Exception):
    """The config is not one the agent would accept; the message says where."""


def validate_node_config(node_id: str, config: dict[str, Any]) -> dict[str, Any]:
    """The config as given, once the agent's model accepts it for this node."""
    present = [key for key in SECRET_KEYS if key in config]
    if present:
        raise NodeConfigError(f"{', '.join(present)}: secrets stay on the node; leave them out")
    if config.get("node_id", node_id) != node_id:
        raise NodeConfigError(f"node_id must stay {node_id!r}")
    stand_in = {key: secrets.token_hex(16) for key in SECRET_KEYS}
    try:
        EdgeSettings.model_validate({"node_id": node_id, **config, **stand_in})
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "config"
        raise NodeConfigError(f"invalid config: {where}: {first['msg']}") from exc
    return {"node_id": node_id, **config}
