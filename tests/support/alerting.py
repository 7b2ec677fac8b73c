"""Real Alertmanager (Debian's `prometheus-alertmanager`) for tests, started from the
repo's `alertmanager/alertmanager.yml` with every receiver's webhook pointed at a
local receiver the test reads, and faster timings."""

from __future__ import annotations

import json
import subprocess
import threading
import urllib.request
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml

from tests.support.services import REPO, free_port, require_binary, stop_process, wait_for

ALERTMANAGER_CONFIG = REPO / "alertmanager" / "alertmanager.yml"


class WebhookReceiver:
    """Collects Alertmanager's webhook notifications (one JSON body per POST)."""

    def __init__(self) -> None:
        self.notifications: list[dict[str, Any]] = []
        received = self.notifications
        lock = threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with lock:
                    received.append({"path": self.path, **body})
                self.send_response(200)
                self.end_headers()

            def log_message(self, *_args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def about(self, alertname: str, status: str | None = None) -> list[dict[str, Any]]:
        """Notifications whose group is `alertname` (and `status`, if given)."""
        return [
            n
            for n in list(self.notifications)
            if n["groupLabels"].get("alertname") == alertname
            and (status is None or n["status"] == status)
        ]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def render_config(webhook_url: str, timings: dict[str, str] | None = None) -> dict[str, Any]:
    """The repo's config with webhooks aimed at `webhook_url` (keeping their paths), the
    repo's templates, no email (no SMTP relay here) and the given route timings."""
    config: dict[str, Any] = yaml.safe_load(ALERTMANAGER_CONFIG.read_text())
    config["templates"] = [str(REPO / "alertmanager" / "templates" / "*.tmpl")]
    for receiver in config["receivers"]:
        receiver.pop("email_configs", None)
        for hook in receiver.get("webhook_configs", []):
            path = "/" + hook["url"].split("/", 3)[3]
            hook["url"] = f"{webhook_url}/{receiver['name']}{path}"
    config["route"].update(timings or {})
    return config


@dataclass
class Alertmanager:
    workdir: Path
    webhook_url: str
    timings: dict[str, str] = field(
        default_factory=lambda: {"group_wait": "1s", "group_interval": "1s"}
    )
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[Any] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Alertmanager:
        binary = require_binary("prometheus-alertmanager")
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "alertmanager.yml"
        config.write_text(yaml.safe_dump(render_config(self.webhook_url, self.timings)))
        log = (self.workdir / "alertmanager.log").open("ab")
        self.proc = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--storage.path={self.workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--cluster.listen-address=",  # no gossip port: a single test instance
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        wait_for(self._ready, 20, "Alertmanager ready")
        return self

    def _ready(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"alertmanager exited: {self.log()[-2000:]}")
        try:
            with urllib.request.urlopen(self.url + "/-/ready", timeout=2) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    def alerts(self) -> list[dict[str, Any]]:
        with urllib.request.urlopen(self.url + "/api/v2/alerts", timeout=5) as response:
            alerts: list[dict[str, Any]] = json.loads(response.read())
        return alerts

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)

    def log(self) -> str:
        path = self.workdir / "alertmanager.log"
        return path.read_text(errors="replace") if path.exists() else ""
