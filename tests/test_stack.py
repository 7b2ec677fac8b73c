"""The README's first command, `wattfleet demo`, end to end: it lists every site, ingests,
restarts an agent that asks for it, reports a process that dies, and keeps its logs
after Ctrl-C.

One demo runs for the whole module (starting it takes most of the time); the Ctrl-C
test stops it, so it comes last. Each test also passes alone."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
from paho.mqtt.client import Client
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from tests.support.services import REPO, service_env, wait_for

pytestmark = pytest.mark.e2e

SITES = 2


@dataclass
class Site:
    node_id: str
    status_url: str
    mqtt_password: str


class RunningDemo:
    """`wattfleet demo` (the installed console script) with its output read line by line."""

    def __init__(self, *args: str) -> None:
        script = Path(sys.executable).parent / "wattfleet"
        assert script.exists(), f"{script} is missing: reinstall the project (tests/run does)"
        self.proc = subprocess.Popen(
            [str(script), "demo", *args],
            cwd=REPO,
            env=service_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_line(self, pattern: str, timeout: float) -> re.Match[str]:
        """The first output line matching `pattern` (from the start of the output)."""

        def found() -> re.Match[str] | None:
            if self.proc.poll() is not None and not self._reader.is_alive():
                raise AssertionError(f"the demo exited:\n{self.output()[-3000:]}")
            return next((m for line in list(self.lines) if (m := re.match(pattern, line))), None)

        try:
            match: re.Match[str] = wait_for(found, timeout, pattern, interval=0.2)
        except TimeoutError as exc:
            raise AssertionError(f"{exc}; output:\n{self.output()[-3000:]}") from exc
        return match

    def sites(self) -> list[Site]:
        pattern = r"^ +(site-\w+)  status (http://127\.0\.0\.1:\d+/)  broker account \1 / (\S+)$"
        return [Site(*m.groups()) for line in self.lines if (m := re.match(pattern, line))]

    def api_url(self) -> str:
        return self.wait_line(r"^  API +(http://127\.0\.0\.1:\d+)/docs", 0)[1]

    def admin_password(self) -> str:
        return self.wait_line(r"^  API .* admin admin@example\.com / (\S+)$", 0)[1]

    def child_pids(self) -> list[int]:
        tasks = Path(f"/proc/{self.proc.pid}/task").iterdir()
        return [int(c) for t in tasks for c in (t / "children").read_text().split()]

    def stop(self) -> int:
        """Ctrl-C, as a user stops it; its exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        status = self.proc.wait(90)
        self._reader.join(10)
        return status


@pytest.fixture(scope="module")
def demo() -> Iterator[RunningDemo]:
    running = RunningDemo("--sites", str(SITES))
    try:
        running.wait_line(r"^Ctrl-C stops everything\.$", 180)
        yield running
    finally:
        running.stop()


def _status(site: Site) -> dict[str, Any] | None:
    """The agent's status page, or None while nothing answers there."""
    try:
        status: dict[str, Any] = httpx.get(site.status_url + "status.json", timeout=5).json()
    except httpx.HTTPError:
        return None
    return status


def _connected(site: Site) -> dict[str, Any] | None:
    """The agent's status once it is connected to the broker and has sampled."""
    status = _status(site)
    return status if status and status["broker_connected"] and status["last_seq"] else None


def _broker_accepts(port: int, username: str, password: str) -> bool:
    # A site's account works only under its own client id (the node id): this takes the
    # agent's connection over for a moment, keeping its session (clean_start=False), and
    # the agent reconnects.
    client = Client(
        CallbackAPIVersion.VERSION2, client_id=username, protocol=MQTTProtocolVersion.MQTTv5
    )
    client.username_pw_set(username, password)
    answer: list[Any] = []
    client.on_connect = lambda _c, _u, _f, reason, _p: answer.append(reason)
    client.connect("127.0.0.1", port, clean_start=False)
    client.loop_start()
    try:
        wait_for(lambda: answer, 10, "CONNACK")
    finally:
        client.disconnect()
        client.loop_stop()
    return not answer[0].is_failure


def test_demo_lists_every_site_and_ingests(demo):
    sites = demo.sites()
    assert len(sites) == SITES, demo.output()
    broker_port = int(demo.wait_line(r"^  broker +mqtt://127\.0\.0\.1:(\d+)", 0)[1])
    for site in sites:
        status = wait_for(partial(_connected, site), 30, f"{site.node_id} on the broker")
        assert status["node_id"] == site.node_id
        assert _broker_accepts(broker_port, site.node_id, site.mqtt_password)
    assert not _broker_accepts(broker_port, sites[0].node_id, "wrong-password")

    pattern = r"ingest: (\d+) rows written, [\d.]+ rows/s, (\d+) dead letters, queue \d+"

    def last_figures() -> tuple[int, int]:
        """Rows written and dead letters, as last printed."""
        found = [
            (int(m[1]), int(m[2])) for line in list(demo.lines) if (m := re.match(pattern, line))
        ]
        return found[-1] if found else (0, 0)

    # Every site, one sample a second, for more than five seconds.
    wait_for(lambda: last_figures()[0] >= SITES * 5, 60, "rows from every site", interval=0.5)
    assert last_figures()[1] == 0


def test_demo_restarts_an_agent_that_asks_to_restart(demo):
    site = demo.sites()[0]
    # Subscribed to its commands before one is sent.
    wait_for(partial(_connected, site), 30, f"{site.node_id} on the broker")
    with httpx.Client(base_url=demo.api_url(), timeout=15) as api:
        login = {"email": "admin@example.com", "password": demo.admin_password()}
        token = api.post("/auth/login", json=login).raise_for_status().json()["access_token"]
        api.headers["Authorization"] = f"Bearer {token}"
        sent = api.post(
            f"/nodes/{site.node_id}/commands",
            params={"queue": "true"},
            json={"type": "RESTART_AGENT", "params": {}},
        )
        command_id = sent.raise_for_status().json()["id"]
        demo.wait_line(
            rf"^{site.node_id} agent exited asking for a restart \(exit code 75\): started "
            r"again \(restart 1\)$",
            60,
        )
        assert wait_for(
            lambda: api.get(f"/commands/{command_id}").json()["state"] == "succeeded",
            30,
            "the command to succeed",
        )

    # The restarted agent serves its page, is back on the broker and samples again; its
    # command results live in memory, so a new process has none.
    status = wait_for(partial(_connected, site), 30, "the restarted agent")
    assert command_id not in [c["id"] for c in status["commands"]]


def test_demo_reports_a_process_that_dies(demo):
    site = demo.sites()[-1]
    seed = f"--seed\0{SITES - 1}\0".encode()
    [simulator] = [
        pid
        for pid in demo.child_pids()
        if b"edge.simulator" in (cmdline := Path(f"/proc/{pid}/cmdline").read_bytes())
        and seed in cmdline
    ]
    os.kill(simulator, signal.SIGKILL)
    died = demo.wait_line(
        rf"^{site.node_id} simulator died: killed by SIGKILL \(exit code -9\); log (\S+)$", 20
    )
    assert "simulator listening" in Path(died[1]).read_text()


def test_demo_keeps_its_logs_after_ctrl_c(demo):
    logs = Path(demo.wait_line(r"^  logs +(\S+)  \(kept after stop\)$", 0)[1])
    assert demo.stop() == 0
    assert demo.lines[-1] == f"logs kept in {logs}"
    stopping = demo.lines.index("stopping...")
    # Stopping in order is not a death.
    assert not [line for line in demo.lines[stopping:] if "died" in line]
    kept = ["collector.log", "api.log", "broker/mosquitto.log", "timescaledb.log"]
    for site in demo.sites():
        kept += [f"{site.node_id}/agent.log", f"{site.node_id}/simulator.log"]
    for name in kept:
        assert (logs / name).is_file(), name
    for name in kept[:3]:
        assert (logs / name).stat().st_size > 0, name
