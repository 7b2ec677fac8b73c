"""The edge agent as a real `python -m edge` process, configured for a test."""

from __future__ import annotations

import sqlite3
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from control_api.demo.processes import Supervised
from tests.support.installed_agent import InstalledAgent
from tests.support.proxy import CuttableProxy
from tests.support.services import free_port, service_env, start_module


class AgentProcess:
    """`python -m edge` reaching the broker through a proxy the test can cut: the broker
    (and the collector on it) stay up while the agent loses its connection.

    Not a broker restart: Mosquitto 2.0.11 does not restore shared subscriptions from
    persistence, so samples published after a restart and before the collectors
    resubscribe are lost (see docs/operations.md)."""

    def __init__(
        self,
        tmp_path: Path,
        broker,
        node,
        simulator_port: int,
        unit_id: int,
        via_proxy: bool = True,
        installed: InstalledAgent | None = None,
        **overrides: Any,
    ):
        # Run from a separate installation (a virtualenv with a built wheel) instead of
        # the repository's sources.
        self.installed = installed
        self.node = node
        self.proxy = CuttableProxy(broker.port) if via_proxy else None
        self.buffer_path = tmp_path / "buffer.sqlite3"
        self.config = tmp_path / "config.yaml"
        settings = {
            "env": "dev",
            "log_level": "DEBUG",
            "node_id": node.id,
            "node_secret": "test-secret",
            "mqtt_host": "127.0.0.1",
            "mqtt_port": self.proxy.port if self.proxy else broker.port,
            "mqtt_password": node.password,
            "mqtt_tls": False,
            "mqtt_keepalive_s": 5,
            "mqtt_reconnect_max_s": 1,
            "modbus_host": "127.0.0.1",
            "modbus_port": simulator_port,
            "modbus_unit_id": unit_id,
            "poll_interval_s": 0.1,
            "buffer_path": str(self.buffer_path),
            "status_host": "127.0.0.1",
            "status_port": free_port(),
            **overrides,
        }
        self.settings = settings
        self.config.write_text(yaml.safe_dump(settings))
        self.log_path = tmp_path / "agent.log"
        self.proc: Any = None

    def start(self) -> AgentProcess:
        args = ("--config", str(self.config))
        if self.installed is None:
            self.proc = start_module("edge", service_env(), self.log_path, *args)
        else:
            self.proc = start_module(
                "edge",
                self.installed.env(),
                self.log_path,
                *args,
                python=str(self.installed.python),
                cwd=self.installed.root,
            )
        return self

    def supervise(self) -> AgentProcess:
        """Starts the agent and, like its systemd unit (and `wattfleet demo`), starts it
        again whenever it exits asking for a restart (status 75), until
        `stop_supervising()`; `proc` is always the current process."""
        self.start()
        self._supervised = Supervised(
            "agent", self.proc, self.log_path, print, restart=lambda: self.start().proc
        )
        return self

    @property
    def restarts(self) -> int:
        return self._supervised.restarts_total

    def stop_supervising(self) -> int:
        return self._supervised.stop()

    def release(self) -> None:
        """Closes the proxy, if any (the process is stopped separately)."""
        if self.proxy is not None:
            self.proxy.close()

    def http(self, path: str) -> str:
        """GET from the agent's local status page."""
        port = yaml.safe_load(self.config.read_text())["status_port"]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return str(response.read().decode())

    def buffered(self) -> list[int]:
        if not self.buffer_path.exists():
            return []
        with sqlite3.connect(self.buffer_path) as db:
            return [row[0] for row in db.execute("SELECT seq FROM samples ORDER BY seq")]

    def next_seq(self) -> int:
        with sqlite3.connect(self.buffer_path) as db:
            return int(
                db.execute("SELECT value FROM counters WHERE name = 'next_seq'").fetchone()[0]
            )
