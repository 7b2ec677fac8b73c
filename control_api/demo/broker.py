"""Mosquitto from this repository's `mosquitto/mosquitto.conf`, on a free local port with
fresh accounts (the demo's broker, and every test's)."""

from __future__ import annotations

import json
import os
import pwd
import secrets
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

from control_api.broker_security import initial_config
from control_api.demo.processes import (
    SOURCE_ROOT,
    DemoError,
    free_port,
    stop_process,
    stopped_if_not_ready,
    wait_for_port,
)

CONFIG = SOURCE_ROOT / "mosquitto" / "mosquitto.conf"
DYNSEC_PLUGIN_PATHS = (
    "/usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so",
    "/usr/lib/aarch64-linux-gnu/mosquitto_dynamic_security.so",
    "/usr/lib/mosquitto_dynamic_security.so",
)
MOSQUITTO_MISSING = (
    "Mosquitto with its dynamic-security plugin is needed (Debian: apt-get install mosquitto)"
)
# Directives replaced here: the listener (TLS is an operator's include), file locations,
# logging.
REPLACED_DIRECTIVES = {
    "listener",
    "include_dir",
    "persistence_location",
    "plugin",
    "plugin_opt_config_file",
    "log_dest",
    "log_type",
}


def dynsec_plugin() -> str | None:
    """The dynamic-security plugin's path; None when it or Mosquitto is not installed."""
    if shutil.which("mosquitto") is None:
        return None
    return next((p for p in DYNSEC_PLUGIN_PATHS if Path(p).exists()), None)


@dataclass
class Broker:
    """Mosquitto with the repository's config; only the listener (127.0.0.1:`port`), file
    locations (under `workdir`), logging and the plugin path are replaced. The admin,
    collector and control-api accounts get fresh random `passwords`."""

    workdir: Path
    port: int = field(default_factory=free_port)
    passwords: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[Any] | None = None

    def __post_init__(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.data_dir = self.workdir / "data"
        self.data_dir.mkdir(exist_ok=True)
        self.log_path = self.workdir / "mosquitto.log"
        self.passwords = {
            name: secrets.token_urlsafe(12) for name in ("admin", "collector", "control-api")
        }
        dynsec = initial_config(
            ("admin", self.passwords["admin"]),
            ("collector", self.passwords["collector"]),
            ("control-api", self.passwords["control-api"]),
        )
        self.dynsec_file = self.data_dir / "dynamic-security.json"
        self.dynsec_file.write_text(json.dumps(dynsec))
        self.config_file = self.workdir / "mosquitto.conf"
        self.config_file.write_text(self._render_config())
        self.log_path.touch()
        self._chown_for_mosquitto([self.workdir, self.data_dir, self.dynsec_file, self.log_path])

    def listener_config(self) -> list[str]:
        """The listener's lines in mosquitto.conf."""
        return [f"listener {self.port} 127.0.0.1"]

    def _render_config(self) -> str:
        plugin = dynsec_plugin()
        if plugin is None:
            raise DemoError(MOSQUITTO_MISSING)
        kept = []
        for line in CONFIG.read_text().splitlines():
            words = line.split()
            if words and not line.startswith("#") and words[0] in REPLACED_DIRECTIVES:
                continue
            kept.append(line)
        kept += [
            f"persistence_location {self.data_dir}/",
            f"plugin {plugin}",
            f"plugin_opt_config_file {self.dynsec_file}",
            *self.listener_config(),
            f"log_dest file {self.log_path}",
            # Not "all": per-message debug lines slow the broker several times over.
            *(f"log_type {t}" for t in ("error", "warning", "notice", "information")),
        ]
        return "\n".join(kept) + "\n"

    def _chown_for_mosquitto(self, paths: list[Path]) -> None:
        """Started as root, mosquitto drops to its own user: it must own what it writes
        (sessions, the dynamic-security file, its log), or it silently fails to save them."""
        if os.geteuid() != 0:
            return
        user = pwd.getpwnam("mosquitto")
        for path in paths:
            os.chown(path, user.pw_uid, user.pw_gid)

    def start(self) -> Self:
        """Starts it and waits until it listens (DemoError if it exits first)."""
        # What it says before its log file is open (a bad config) goes to the same file.
        with self.log_path.open("ab") as early_log:
            self.proc = subprocess.Popen(
                ["mosquitto", "-c", str(self.config_file)],
                stdout=early_log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        with stopped_if_not_ready(self.proc):
            wait_for_port(self.port, 10, self.proc)
        return self

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
            self.proc = None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
