"""CONFIG_PUSH across a restart: back up, apply, then confirm or roll back.

Staging validates the new settings, keeps the running file as `config.yaml.bak`, writes
the new one and a marker (`config-pending.json`, beside the buffer) with the command id
and a deadline; the agent then restarts into the new config. The restarted agent
confirms once it has read the inverter and reached the broker, or, when the deadline
passes first, puts the backup back, marks the push rolled back and restarts again; the
old config then reports the failure. The marker survives crashes, so every push ends in
exactly one outcome.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from contract.node_config import NODE_HELD_SECRETS
from edge.atomic_file import write_atomically
from edge.config import EdgeSettings


class ConfigPushError(Exception):
    """The pushed config is invalid or cannot be written; nothing was changed."""


class ConfigPush:
    def __init__(self, config_path: Path, state_dir: Path) -> None:
        self.config_path = config_path
        self.backup_path = config_path.with_name(config_path.name + ".bak")
        self.marker_path = state_dir / "config-pending.json"

    def pending(self) -> dict[str, Any] | None:
        """The push in progress, if any: {"id", "version", "state", "deadline", ...}."""
        try:
            marker: dict[str, Any] = json.loads(self.marker_path.read_text())
        except FileNotFoundError:
            return None
        return marker

    def stage(
        self,
        command_id: str,
        version: int,
        config: dict[str, Any],
        node_id: str,
        deadline: datetime,
    ) -> None:
        """Validates and writes the new config; raises ConfigPushError on bad input.

        Secrets the push leaves out (the hub never sends them) are kept from the
        running file."""
        try:
            running = yaml.safe_load(self.config_path.read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigPushError(f"cannot read the running config: {exc}") from exc
        config = {
            **{k: running[k] for k in NODE_HELD_SECRETS if k in running and k not in config},
            **config,
        }
        try:
            pushed = EdgeSettings(**config)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise ConfigPushError(f"invalid config: {where}: {first['msg']}") from exc
        if pushed.node_id != node_id:
            raise ConfigPushError(f"node_id must stay {node_id!r}")
        try:
            self.backup_path.write_bytes(self.config_path.read_bytes())
            write_atomically(self.config_path, yaml.safe_dump(config, sort_keys=False))
            marker = {
                "id": command_id,
                "version": version,
                "state": "applying",
                "deadline": deadline.isoformat(),
            }
            write_atomically(self.marker_path, json.dumps(marker))
        except OSError as exc:
            raise ConfigPushError(f"cannot write the config: {exc}") from exc

    def roll_back(self, reason: str) -> None:
        """Puts the backup back and records why, for the restarted agent to report."""
        write_atomically(self.config_path, self.backup_path.read_text())
        marker = self.pending() or {}
        marker.update(state="rolled_back", reason=reason)
        write_atomically(self.marker_path, json.dumps(marker))

    def finish(self) -> None:
        self.marker_path.unlink(missing_ok=True)
