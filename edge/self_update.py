"""SELF_UPDATE across a restart: install, restart, then confirm or roll back.

Staging installs `wattfleet==<version>` into the agent's own environment with pip
(`sys.executable -m pip`: the interpreter running the agent, so a virtualenv on the Pi
is updated, not the system) from the configured index, and writes a marker
(`update-pending.json`, in the agent's state dir: edge/config_push.py) with the command
id, both versions and a deadline; the agent then restarts into the new version. If pip
fails, nothing changed and the command fails at once. The restarted agent confirms once
it runs the new version and has read the inverter and reached the broker; when the
deadline passes first, it reinstalls the previous version, marks the update rolled back
and restarts again; the old version then reports the failure. Like a config push, every
update ends in exactly one outcome.
"""

from __future__ import annotations

import importlib.metadata
import json
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

from edge.atomic_file import write_atomically

DISTRIBUTION = "wattfleet"
MARKER_NAME = "update-pending.json"


class SelfUpdateError(Exception):
    """pip could not install the version; the message is its last words."""


def installed_version() -> str:
    try:
        return importlib.metadata.version(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        return "0+unknown"


class SelfUpdate:
    def __init__(
        self,
        state_dir: Path,
        index_url: str | None = None,
        find_links: str | None = None,
        timeout_s: float = 600.0,
    ) -> None:
        self.marker_path = state_dir / MARKER_NAME
        self.timeout_s = timeout_s
        self.source_args: list[str] = []
        if index_url:
            self.source_args += ["--index-url", index_url]
        if find_links:
            self.source_args += ["--find-links", find_links]
            if not index_url:
                self.source_args.append("--no-index")

    def pending(self) -> dict[str, Any] | None:
        """The update in progress, if any: {"id", "from", "to", "state", "deadline", ...}."""
        try:
            marker: dict[str, Any] = json.loads(self.marker_path.read_text())
        except FileNotFoundError:
            return None
        return marker

    def applying(self) -> dict[str, Any] | None:
        """The update this process runs (or failed to start) with, not yet confirmed."""
        marker = self.pending()
        return marker if marker is not None and marker.get("state") == "applying" else None

    def install(self, version: str) -> None:
        """Installs exactly `version`; raises SelfUpdateError saying why not."""
        # An argument list, never a shell string; `version` passed the contract's pattern.
        command = [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--disable-pip-version-check",
            "--no-input",
            *self.source_args,
            f"{DISTRIBUTION}=={version}",
        ]
        try:
            result = subprocess.run(
                command, capture_output=True, text=True, timeout=self.timeout_s, check=False
            )
        except subprocess.TimeoutExpired as exc:
            raise SelfUpdateError(f"pip took more than {self.timeout_s:.0f} s") from exc
        if result.returncode != 0:
            lines = [line for line in result.stderr.splitlines() if line.strip()]
            raise SelfUpdateError(lines[-1].strip() if lines else f"pip exited {result.returncode}")

    def stage(self, command_id: str, version: str, deadline: datetime) -> None:
        """Installs the version and leaves the marker for the restarted agent."""
        current = installed_version()
        if version == current:
            raise SelfUpdateError(f"already running {version}")
        self.install(version)
        marker = {
            "id": command_id,
            "from": current,
            "to": version,
            "state": "applying",
            "deadline": deadline.isoformat(),
        }
        write_atomically(self.marker_path, json.dumps(marker))

    def roll_back(self, reason: str) -> None:
        """Reinstalls the previous version and records why, for it to report."""
        marker = self.pending() or {}
        try:
            self.install(marker["from"])
            marker.update(state="rolled_back", reason=reason)
        except SelfUpdateError as exc:
            marker.update(state="rolled_back", reason=f"{reason}; reinstalling failed: {exc}")
        write_atomically(self.marker_path, json.dumps(marker))

    def confirm(self) -> None:
        self.finish()

    def finish(self) -> None:
        self.marker_path.unlink(missing_ok=True)
