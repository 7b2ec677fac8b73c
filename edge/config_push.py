"""CONFIG_PUSH across a restart: back up, apply, then confirm or roll back.

Staging validates the new settings, keeps the running file as `config.yaml.bak`, writes
a marker (`config-pending.json`, in the agent's state dir) with the command id and a
deadline, then the new config; the agent then restarts into the new config. The
restarted agent confirms once it has read the inverter and reached the broker, or, when
the deadline passes first, puts the backup back, marks the push rolled back and
restarts again; the old config then reports the failure. An agent that cannot even load
or start with the new config rolls back at once (edge/__main__.py). The marker survives
crashes, so every push ends in exactly one outcome.

The state dir is fixed by the command line (`--state-dir`, by default the config file's
folder), never by a config key: a pushed `buffer_path` cannot hide the marker from the
restarted agent. Agents before this kept their markers beside the buffer;
`adopt_legacy_marker` moves one left there (a SELF_UPDATE from such an agent).
"""

from __future__ import annotations

import json
import shutil
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from contract.node_config import NODE_HELD_SECRETS, SITE_HELD_KEYS
from edge.atomic_file import write_atomically
from edge.config import EdgeSettings

MARKER_NAME = "config-pending.json"
APPLIED_NAME = "config-applied.json"


def adopt_legacy_marker(marker_path: Path, legacy_dir: Path) -> None:
    """Moves a marker an older agent left in `legacy_dir` (beside its buffer) to
    `marker_path`, unless one is there already."""
    legacy = legacy_dir / marker_path.name
    if legacy != marker_path and legacy.exists() and not marker_path.exists():
        shutil.move(legacy, marker_path)


class ConfigPushError(Exception):
    """The pushed config is invalid or cannot be written; nothing was changed."""


class ConfigPush:
    def __init__(self, config_path: Path, state_dir: Path) -> None:
        self.config_path = config_path
        self.backup_path = config_path.with_name(config_path.name + ".bak")
        self.marker_path = state_dir / MARKER_NAME
        self.applied_path = state_dir / APPLIED_NAME
        # The version of the last push confirmed on this node; None before the first.
        self.applied_version = self._read_applied_version()

    def pending(self) -> dict[str, Any] | None:
        """The push in progress, if any: {"id", "version", "state", "deadline", ...}."""
        try:
            marker: dict[str, Any] = json.loads(self.marker_path.read_text())
        except FileNotFoundError:
            return None
        return marker

    def applying(self) -> dict[str, Any] | None:
        """The push this process runs (or failed to start) with, not yet confirmed."""
        marker = self.pending()
        return marker if marker is not None and marker.get("state") == "applying" else None

    def _read_applied_version(self) -> int | None:
        try:
            version = json.loads(self.applied_path.read_text()).get("version")
        except (OSError, ValueError, AttributeError):
            return None
        return version if isinstance(version, int) and version >= 1 else None

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
        running file, and so are the site-held keys (remote access), whatever the push
        says about them."""
        try:
            running = yaml.safe_load(self.config_path.read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigPushError(f"cannot read the running config: {exc}") from exc
        config = {
            **{k: running[k] for k in NODE_HELD_SECRETS if k in running and k not in config},
            **{k: v for k, v in config.items() if k not in SITE_HELD_KEYS},
            **{k: running[k] for k in SITE_HELD_KEYS if k in running},
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
            marker = {
                "id": command_id,
                "version": version,
                "state": "applying",
                "deadline": deadline.isoformat(),
            }
            # The marker first: a crash in between leaves a push to roll back (a no-op
            # on the unchanged file), never a new config nothing follows.
            write_atomically(self.marker_path, json.dumps(marker))
            write_atomically(self.config_path, yaml.safe_dump(config, sort_keys=False))
        except OSError as exc:
            raise ConfigPushError(f"cannot write the config: {exc}") from exc

    def roll_back(self, reason: str) -> None:
        """Puts the backup back and records why, for the restarted agent to report."""
        write_atomically(self.config_path, self.backup_path.read_text())
        marker = self.pending() or {}
        marker.update(state="rolled_back", reason=reason)
        write_atomically(self.marker_path, json.dumps(marker))

    def confirm(self) -> None:
        """The push applied: its version is the node's from now on."""
        marker = self.pending() or {}
        write_atomically(self.applied_path, json.dumps({"version": marker.get("version")}))
        self.applied_version = self._read_applied_version()
        self.finish()

    def finish(self) -> None:
        self.marker_path.unlink(missing_ok=True)
