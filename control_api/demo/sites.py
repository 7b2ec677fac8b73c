"""Simulated sites: nodes enrolled through the control API as an admin would, each a
SunSpec simulator (`python -m edge.simulator`) read over Modbus TCP by a real edge agent
(`python -m edge`) holding the broker account and command key the API issued."""

from __future__ import annotations

import json
import secrets
import subprocess
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import yaml

from contract.tariff import TariffVersion
from control_api.demo.processes import (
    DemoError,
    free_port,
    service_env,
    start_module,
    stopped_if_not_ready,
    wait_for_port,
)


@dataclass(frozen=True)
class EnrolledNode:
    """A node's credentials as `POST /nodes` issued them (shown only once), and its
    site's zone and tariffs as the hub pushes them (config keys)."""

    node_id: str
    mqtt_password: str
    node_secret: str
    site_settings: dict[str, Any]


class AdminClient:
    """The control API on 127.0.0.1:`port` as a logged-in admin (JSON over HTTP, with the
    standard library only)."""

    def __init__(self, port: int, email: str, password: str) -> None:
        self.port = port
        self.headers = {"Content-Type": "application/json"}
        token = self.call("POST", "/auth/login", {"email": email, "password": password})
        self.headers["Authorization"] = f"Bearer {token['access_token']}"

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        """The decoded JSON answer; DemoError on an HTTP error status."""
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}{path}",
            method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers=self.headers,
        )
        try:  # S310: the URL above is always http://127.0.0.1
            with urllib.request.urlopen(request, timeout=15) as response:  # noqa: S310
                return json.load(response)
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")[:500]
            raise DemoError(f"{method} {path}: HTTP {exc.code} {detail}") from exc


DEMO_TIMEZONE = "Europe/Warsaw"


def g12_tariff(valid_from: date) -> dict[str, Any]:
    """A Polish two-zone household tariff like G12, in PLN per kWh: cheaper from 22:00
    to 06:00 and from 13:00 to 15:00 every day; surplus sold at a flat, lower price."""
    off_peak = [(0, 6), (13, 15), (22, 24)]
    return {
        "valid_from": valid_from.isoformat(),
        "currency": "PLN",
        "import_price": {
            "default_price": 1.05,
            "default_name": "peak",
            "periods": [
                {"name": "off-peak", "from_hour": start, "to_hour": end, "price": 0.62}
                for start, end in off_peak
            ],
        },
        "export_price": {"default_price": 0.25, "default_name": "export"},
    }


def enroll_sites(admin: AdminClient, count: int) -> list[EnrolledNode]:
    """A demo tenant in Poland with its tariff, and `count` nodes enrolled in it, with
    their broker accounts and their site's zone and tariff for the agents' configs."""
    slug = f"demo-{secrets.token_hex(4)}"
    tenant = {"slug": slug, "name": "Demo", "timezone": DEMO_TIMEZONE}
    tenant_id = admin.call("POST", "/tenants", tenant)["id"]
    # From the start of the year, so the demo's whole history is priced by it (a new
    # tenant has no history to rewrite, but the rule asks for backdate all the same).
    since = date.today().replace(month=1, day=1)
    tariff = admin.call("POST", f"/tenants/{tenant_id}/tariffs?backdate=true", g12_tariff(since))
    # What the hub would push each agent once it reported a config without them: the
    # agents start with them instead (an agent's first push would restart it).
    version = TariffVersion.model_validate(
        {k: tariff[k] for k in ("valid_from", "currency", "import_price", "export_price")}
    )
    site_settings = {"timezone": DEMO_TIMEZONE, "tariffs": [version.model_dump(mode="json")]}
    nodes = []
    for _ in range(count):
        node_id = f"site-{secrets.token_hex(5)}"
        issued = admin.call("POST", "/nodes", {"id": node_id, "tenant_id": tenant_id})
        nodes.append(
            EnrolledNode(
                issued["node_id"], issued["mqtt_password"], issued["node_secret"], site_settings
            )
        )
    return nodes


def start_simulator(
    seed: int, log_path: Path, coordinator_port: int
) -> tuple[subprocess.Popen[bytes], int]:
    """A simulated inverter on a free port (unit id 1), once it listens; and the port. Its
    site coordinator decides through the agent's interface on `coordinator_port`."""
    port = free_port()
    proc = start_module(
        "edge.simulator",
        service_env(),
        log_path,
        *("--port", str(port), "--seed", str(seed)),
        *("--coordinator", f"http://127.0.0.1:{coordinator_port}"),
    )
    with stopped_if_not_ready(proc):
        wait_for_port(port, 15, proc)
    return proc, port


def write_agent_config(
    path: Path,
    node: EnrolledNode,
    broker_port: int,
    modbus_port: int,
    interval_s: float,
    coordinator_port: int,
) -> int:
    """The agent's YAML settings for this node, simulator and broker (its buffer beside
    the file, its coordinator interface on `coordinator_port`); returns the port of its
    local status page."""
    status_port = free_port()
    settings = {
        "env": "dev",
        "log_level": "INFO",
        "node_id": node.node_id,
        "node_secret": node.node_secret,
        "mqtt_host": "127.0.0.1",
        "mqtt_port": broker_port,
        "mqtt_password": node.mqtt_password,
        "mqtt_tls": False,
        "modbus_host": "127.0.0.1",
        "modbus_port": modbus_port,
        "modbus_unit_id": 1,
        "poll_interval_s": interval_s,
        "buffer_path": str(path.parent / "buffer.sqlite3"),
        "status_host": "127.0.0.1",
        "status_port": status_port,
        "coordinator_port": coordinator_port,
        **node.site_settings,
    }
    path.write_text(yaml.safe_dump(settings))
    return status_port


def start_agent(config_path: Path, log_path: Path) -> subprocess.Popen[bytes]:
    """`python -m edge --config config_path`, appending to `log_path`."""
    return start_module("edge", service_env(), log_path, "--config", str(config_path))
