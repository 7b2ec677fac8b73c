"""The hub's own services as processes on a database and broker: the collector's and the
control API's settings, starting the API, its first admin, and reading `/metrics`."""

from __future__ import annotations

import secrets
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from control_api.demo.broker import Broker
from control_api.demo.database import Database
from control_api.demo.processes import (
    SOURCE_ROOT,
    DemoError,
    service_env,
    settings_env,
    start_module,
    stopped_if_not_ready,
    wait_for,
    wait_for_port,
)


def collector_env(
    db: Database, broker: Broker, client_id: str, metrics_port: int, **settings: str
) -> dict[str, str]:
    """The environment of a `python -m collector` on this database and broker; `settings`
    override by setting name (`batch_max_messages="50"`)."""
    connection = settings_env(
        {
            "mqtt_host": "127.0.0.1",
            "mqtt_port": broker.port,
            "mqtt_username": "collector",
            "mqtt_password": broker.passwords["collector"],
            "mqtt_client_id": client_id,
            "metrics_port": metrics_port,
        }
    )
    return service_env(**{**db.env(), **connection, **settings_env(settings)})


def api_settings(db: Database, broker: Broker, **overrides: Any) -> dict[str, Any]:
    """Settings by name of a control API on this database and broker (dev mode, a fresh
    token key); enrolled nodes are told to use this broker's plain local listener."""
    return {
        "env": "dev",
        "database_url": db.url,
        "database_prepared_statements": db.prepared_statements,
        "mqtt_host": "127.0.0.1",
        "mqtt_port": broker.port,
        "mqtt_username": "control-api",
        "mqtt_password": broker.passwords["control-api"],
        "jwt_secret": secrets.token_urlsafe(32),
        "node_mqtt_host": "127.0.0.1",
        "node_mqtt_port": broker.port,
        **overrides,
    }


def api_env(settings: dict[str, Any]) -> dict[str, str]:
    """The environment of a `python -m control_api` (server or command) with `settings`."""
    return service_env(**settings_env(settings))


def start_api(env: dict[str, str], port: int, log_path: Path) -> subprocess.Popen[bytes]:
    """`python -m control_api` listening on `port`, returned once `/readiness` says ready
    (database and broker reachable); DemoError if it exits first."""
    proc = start_module("control_api", env, log_path)

    def ready() -> bool:
        if proc.poll() is not None:
            raise DemoError(f"the control API exited with {proc.returncode}; log {log_path}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readiness", timeout=5) as r:
                return bool(r.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    with stopped_if_not_ready(proc):
        wait_for_port(port, 30, proc)
        wait_for(ready, 20, "the control API to be ready", interval=0.2)
    return proc


def create_admin(env: dict[str, str], email: str, password: str) -> None:
    """`python -m control_api create-admin`, as an operator runs it."""
    result = subprocess.run(
        [sys.executable, "-m", "control_api", "create-admin", "--email", email, "--password-stdin"],
        input=password + "\n",
        env=env,
        cwd=SOURCE_ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise DemoError(f"create-admin failed: {result.stderr.strip()[-2000:]}")


def scrape(port: int) -> dict[str, float]:
    """A service's /metrics on 127.0.0.1:`port` as {"name{label=value,...}": value}."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    values = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
            values[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
    return values
