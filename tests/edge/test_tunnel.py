"""The remote debug tunnel end to end: a real agent, signed commands from the hub's
broker account, Debian's OpenSSH server as the bastion, and a TCP echo server standing
in for the Pi's sshd (`tunnel_local_port`, allowed in env dev only)."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import yaml
from pydantic import ValidationError
from selenium.webdriver.common.by import By

from contract import topics
from contract.commands import (
    CloseTunnelParams,
    CommandType,
    OpenTunnelParams,
    SafetyLockParams,
    build_command,
)
from contract.node_config import NodeConfig
from contract.telemetry import NODE_STATUS
from edge.config_push import ConfigPush, ConfigPushError
from tests.edge.test_commands import Hub, agent_and_hub
from tests.edge.test_commands import node_agent as node_agent  # a fixture
from tests.support.agent import AgentProcess
from tests.support.bastion import Bastion, bastion, echo_server, echoes, listening
from tests.support.browser import artifact_dir, chromium, save_full_page
from tests.support.fleet import mqtt_client, publish_json
from tests.support.services import free_port, wait_for

pytestmark = pytest.mark.integration
SECRET = b"test-secret"
# A well-formed ed25519 key no bastion here has.
OTHER_HOST_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDWkWxL0vVqf1Y1PjE3bIzw1Vd6n2S5I3b1v2GJpRk8x"


class Statuses:
    """The node's status messages as the collector's account receives them, validated
    by the contract."""

    def __init__(self, broker, node_id: str) -> None:
        self.latest: dict[str, Any] | None = None
        self._lock = threading.Lock()
        self.client = mqtt_client(broker, "collector", broker.passwords["collector"])
        self.client.message_callback_add(topics.status(node_id), self._on_status)
        self.client.subscribe(topics.all_nodes("status"), 1)

    def _on_status(self, _c, _u, msg) -> None:
        with self._lock:
            self.latest = dict(NODE_STATUS.validate_json(msg.payload))

    def tunnel(self) -> dict[str, Any] | None:
        with self._lock:
            return None if self.latest is None else self.latest.get("tunnel")


def tunnel_shown(agent: AgentProcess) -> dict[str, Any]:
    """The tunnel as the agent's local status page has it."""
    tunnel: dict[str, Any] = json.loads(agent.http("/status.json"))["tunnel"]
    return tunnel


@pytest.fixture
def setup(broker, simulator, tmp_path) -> Iterator[tuple[AgentProcess, Hub, Bastion, int]]:
    with (
        echo_server() as echo_port,
        bastion(tmp_path) as ssh_server,
        agent_and_hub(
            broker,
            simulator,
            tmp_path,
            False,
            poll_interval_s=1.0,
            tunnel_enabled=True,
            tunnel_local_port=echo_port,
        ) as (agent, hub),
    ):
        yield agent, hub, ssh_server, echo_port


def open_params(ssh_server: Bastion, remote_port: int, **overrides: Any) -> OpenTunnelParams:
    values: dict[str, Any] = {
        "bastion_host": "127.0.0.1",
        "bastion_port": ssh_server.port,
        "bastion_user": ssh_server.user,
        "bastion_host_key": ssh_server.host_key,
        "remote_port": remote_port,
        "duration_s": 600,
        "requested_by": "admin@example.com",
        "reason": "inverter stops answering at night",
        **overrides,
    }
    return OpenTunnelParams(**values)


def authorized(agent: AgentProcess, ssh_server: Bastion) -> int:
    """Puts the agent's reported tunnel key in the bastion's authorized_keys, for a
    fresh remote port; that port."""
    key = tunnel_shown(agent)["public_key"]
    assert key.startswith("ssh-ed25519 ")
    remote_port = free_port()
    ssh_server.authorize(key, remote_port)
    return remote_port


def test_open_reaches_the_pi_side_and_close_ends_it(setup, broker, tmp_path):
    agent, hub, ssh_server, _echo_port = setup
    statuses = Statuses(broker, hub.node_id)
    remote_port = authorized(agent, ssh_server)

    opened = hub.send(CommandType.OPEN_TUNNEL, open_params(ssh_server, remote_port))
    ack = hub.outcome(opened, timeout=40)
    assert ack["state"] == "succeeded", ack
    assert f"localhost:{remote_port}" in ack["detail"]
    # Through the bastion's port to the echo server on the agent's side.
    assert echoes(remote_port)
    shown = tunnel_shown(agent)
    assert shown["state"] == "open"
    assert shown["remote_port"] == remote_port
    assert shown["requested_by"] == "admin@example.com"
    assert datetime.fromisoformat(shown["until"]) > datetime.now(UTC) + timedelta(minutes=9)
    reported = wait_for(
        lambda: (t := statuses.tunnel()) and t["state"] == "open" and t, 20, "open reported"
    )
    assert reported["remote_port"] == remote_port

    with chromium() as browser:
        browser.get(f"http://127.0.0.1:{agent.settings['status_port']}/")
        banner = browser.find_element(By.ID, "tunnel-open")
        wait_for(banner.is_displayed, 10, "the open tunnel's banner")
        assert banner.text.startswith("Remote access is open: admin@example.com can log in")
        assert "(inverter stops answering at night)" in banner.text
        assert browser.find_element(By.ID, "tunnel").text.startswith("Open: for admin@")
        save_full_page(browser, artifact_dir(tmp_path) / "status-page-tunnel-open.png")

        closed = hub.send(
            CommandType.CLOSE_TUNNEL, CloseTunnelParams(requested_by="ops@example.com")
        )
        ack = hub.outcome(closed)
        assert (ack["state"], ack["detail"]) == ("succeeded", "tunnel closed")
        wait_for(lambda: not banner.is_displayed(), 10, "the banner gone")
        assert browser.find_element(By.ID, "tunnel").text == "Closed: closed by ops@example.com"
    wait_for(lambda: not listening(remote_port), 10, "the bastion's port closed")
    assert tunnel_shown(agent)["state"] == "closed"
    assert tunnel_shown(agent)["detail"] == "closed by ops@example.com"
    wait_for(lambda: (statuses.tunnel() or {}).get("state") == "closed", 20, "closed reported")


def test_locking_the_site_closes_an_open_tunnel(setup):
    # A shell reached through the tunnel is on the Pi itself: from there it could lift
    # the site's own lock (POST /safety-lock from the loopback). So no tunnel stays
    # open while the site is locked, whoever locked it.
    agent, hub, ssh_server, _echo_port = setup
    remote_port = authorized(agent, ssh_server)
    opened = hub.send(CommandType.OPEN_TUNNEL, open_params(ssh_server, remote_port))
    assert hub.outcome(opened, timeout=40)["state"] == "succeeded"
    assert echoes(remote_port)

    lock = SafetyLockParams(locked=True, requested_by="admin@example.com", reason="storm")
    assert hub.outcome(hub.send(CommandType.SAFETY_LOCK, lock))["state"] == "succeeded"
    wait_for(lambda: tunnel_shown(agent)["state"] == "closed", 10, "the tunnel closed")
    assert tunnel_shown(agent)["detail"] == "the site is safety-locked"
    wait_for(lambda: not listening(remote_port), 10, "the bastion's port closed")


def test_the_tunnel_closes_at_its_expiry(setup):
    agent, hub, ssh_server, _echo_port = setup
    remote_port = authorized(agent, ssh_server)
    opened = hub.send(CommandType.OPEN_TUNNEL, open_params(ssh_server, remote_port, duration_s=10))
    assert hub.outcome(opened, timeout=40)["state"] == "succeeded"
    assert echoes(remote_port)
    wait_for(lambda: tunnel_shown(agent)["state"] == "closed", 30, "the tunnel expired")
    assert tunnel_shown(agent)["detail"].startswith("expired at ")
    wait_for(lambda: not listening(remote_port), 10, "the bastion's port closed")


def test_the_bastion_refuses_any_other_port(setup):
    agent, hub, ssh_server, _echo_port = setup
    permitted = authorized(agent, ssh_server)
    other = free_port()
    assert other != permitted
    opened = hub.send(CommandType.OPEN_TUNNEL, open_params(ssh_server, other))
    ack = hub.outcome(opened, timeout=40)
    assert ack["state"] == "failed"
    assert "remote port forwarding failed" in ack["detail"]
    assert not listening(other)
    assert tunnel_shown(agent)["state"] == "failed"


def test_a_bastion_with_another_host_key_is_not_trusted(setup):
    agent, hub, ssh_server, _echo_port = setup
    remote_port = authorized(agent, ssh_server)
    wrong_key = OTHER_HOST_KEY
    opened = hub.send(
        CommandType.OPEN_TUNNEL, open_params(ssh_server, remote_port, bastion_host_key=wrong_key)
    )
    ack = hub.outcome(opened, timeout=40)
    assert ack["state"] == "failed"
    assert "Host key verification failed" in ack["detail"]
    assert not listening(remote_port)


def test_forged_expired_or_replayed_commands_open_nothing(setup):
    agent, hub, ssh_server, _echo_port = setup
    remote_port = authorized(agent, ssh_server)
    params = open_params(ssh_server, remote_port)

    forged = hub.outcome(hub.send(CommandType.OPEN_TUNNEL, params, secret=b"not-the-secret"))
    assert (forged["state"], forged["detail"]) == ("rejected", "bad signature")
    expired = hub.outcome(hub.send(CommandType.OPEN_TUNNEL, params, expires_in_s=-1))
    assert expired["state"] == "rejected"
    assert expired["detail"].startswith("expired at")
    assert not listening(remote_port)

    # A genuine one opens; closed again, the very same message replayed opens nothing.
    now = datetime.now(UTC)
    genuine = build_command(
        hub.node_id,
        SECRET,
        uuid.uuid4().hex,
        CommandType.OPEN_TUNNEL,
        params,
        now,
        now + timedelta(seconds=60),
    )
    publish_json(hub.client, topics.commands(hub.node_id), genuine)
    assert hub.outcome(genuine["id"], timeout=40)["state"] == "succeeded"
    closed = hub.send(CommandType.CLOSE_TUNNEL, CloseTunnelParams(requested_by="ops@example.com"))
    assert hub.outcome(closed)["state"] == "succeeded"
    wait_for(lambda: not listening(remote_port), 10, "the bastion's port closed")
    hub.acks.pop(genuine["id"])
    publish_json(hub.client, topics.commands(hub.node_id), genuine)
    replayed = hub.outcome(genuine["id"])
    assert replayed["state"] == "rejected"
    assert replayed["detail"].startswith("replayed")
    assert not listening(remote_port)
    assert tunnel_shown(agent)["state"] == "closed"


def test_an_agent_without_tunnel_enabled_refuses(node_agent, tmp_path):
    agent, hub = node_agent
    params = OpenTunnelParams(
        bastion_host="bastion.example.com",
        bastion_host_key=OTHER_HOST_KEY,
        remote_port=20022,
        requested_by="admin@example.com",
        reason="look around",
    )
    ack = hub.outcome(hub.send(CommandType.OPEN_TUNNEL, params))
    assert ack["state"] == "rejected"
    assert ack["detail"] == "remote access is off on this node (tunnel_enabled: false)"
    assert json.loads(agent.http("/status.json"))["tunnel"] is None
    assert not (tmp_path / "tunnel_ed25519").exists()


def test_a_config_push_never_changes_the_site_held_tunnel_keys(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"node_id": "site-1", "tunnel_enabled": False}))
    pushed = {"node_id": "site-1", "tunnel_enabled": True, "tunnel_local_port": 2222}
    ConfigPush(config, tmp_path).stage("c1", 2, pushed, "site-1", datetime.now(UTC))
    written = yaml.safe_load(config.read_text())
    assert written["tunnel_enabled"] is False
    assert "tunnel_local_port" not in written  # the default: the Pi's sshd


def test_a_config_push_naming_a_site_held_key_in_another_case_is_refused(tmp_path):
    """Keys once matched without regard to case: `TUNNEL_ENABLED`/`SAFETY_LOCK` went past
    the by-name guard above and, first in the written file, won over the site's own."""
    config = tmp_path / "config.yaml"
    site = {"node_id": "site-1", "tunnel_enabled": False, "safety_lock": True}
    config.write_text(yaml.safe_dump(site))
    for key, value in (("TUNNEL_ENABLED", True), ("Safety_Lock", False)):
        pushed = {"node_id": "site-1", key: value}
        with pytest.raises(ConfigPushError, match=f"keys are lower case: {key}"):
            ConfigPush(config, tmp_path).stage("c1", 2, pushed, "site-1", datetime.now(UTC))
    assert yaml.safe_load(config.read_text()) == site


def test_outside_dev_the_tunnel_leads_only_to_the_pis_sshd():
    with pytest.raises(ValidationError, match="tunnel_local_port"):
        NodeConfig(node_id="site-1", env="prod", node_secret="s", tunnel_local_port=2222)
    assert NodeConfig(node_id="site-1", env="dev", tunnel_local_port=2222).tunnel_local_port == 2222


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("bastion_host", "-oProxyCommand=sh"),
        ("bastion_user", "-l"),
        ("bastion_host_key", "@cert-authority * ssh-ed25519 AAAA"),
        ("bastion_host_key", "ssh-ed25519 AAAA\nbastion ssh-ed25519 BBBB"),
        ("remote_port", 22),
        ("duration_s", 5 * 3600),
        ("reason", ""),
    ],
)
def test_open_tunnel_params_leave_no_room_for_ssh_options(field, value):
    params = {
        "bastion_host": "bastion.example.com",
        "bastion_host_key": OTHER_HOST_KEY,
        "remote_port": 20022,
        "requested_by": "admin@example.com",
        "reason": "look around",
        field: value,
    }
    with pytest.raises(ValidationError):
        OpenTunnelParams(**params)
