"""The control API as a real process, with a real collector, the real edge agent and
the simulator on real Mosquitto (dynamic security) and the database."""

from __future__ import annotations

import pytest
import yaml

from contract.tariff import TariffVersion
from tests.conftest import SIMULATOR_UNIT
from tests.support.agent import AgentProcess
from tests.support.control_api import PASSWORD, create_user
from tests.support.fleet import Node, unique
from tests.support.services import stop_process, wait_for

pytestmark = pytest.mark.e2e

CHARGE = {"type": "FORCE_CHARGE", "params": {"power_w": 2000, "duration_s": 600}}


def admin_client(api, database):
    admin = create_user(database, "admin", None)
    client = api.client()
    token = client.post("/auth/login", json={"email": admin.email, "password": PASSWORD})
    client.headers["Authorization"] = f"Bearer {token.json()['access_token']}"
    return client


def enrolled_agent(
    client,
    database,
    broker,
    simulator,
    tmp_path,
    via_proxy=False,
    supervised=False,
    tenant=None,
    **settings,
):
    tenant = tenant or client.post("/tenants", json={"slug": unique("t"), "name": "Site"}).json()
    credentials = client.post("/nodes", json={"id": unique("node"), "tenant_id": tenant["id"]})
    assert credentials.status_code == 201, credentials.text
    issued = credentials.json()
    node = Node(issued["node_id"], tenant["id"], issued["mqtt_password"])
    agent = AgentProcess(
        tmp_path,
        broker,
        node,
        simulator,
        SIMULATOR_UNIT,
        via_proxy=via_proxy,
        node_secret=issued["node_secret"],
        poll_interval_s=1.0,
        **settings,
    )
    return node, agent.supervise() if supervised else agent.start()


def command_state(client, command_id, state, timeout=30):
    def reached():
        body = client.get(f"/commands/{command_id}").json()
        return body if body["state"] == state else None

    return wait_for(reached, timeout, f"command {command_id} to be {state}")


def test_enrolled_agent_obeys_force_charge_and_is_cut_off_when_disabled(
    api_process, database, broker, simulator, inverter, collector_factory, tmp_path
):
    collector_factory().start()
    client = admin_client(api_process, database)
    node, agent = enrolled_agent(client, database, broker, simulator, tmp_path)
    try:
        wait_for(
            lambda: client.get(f"/nodes/{node.id}").json()["state"] == "online",
            30,
            "the node online (its status through the collector)",
        )
        response = client.post(f"/nodes/{node.id}/commands", json=CHARGE)
        assert response.status_code == 202, response.text
        done = command_state(client, response.json()["id"], "succeeded")
        node_answers = [e for e in done["events"] if e["source"] == "node"]
        assert [e["state"] for e in node_answers] == ["received", "succeeded"]
        assert "InWRte=40.0%" in done["detail"]
        storage = inverter.read_model(124)
        assert storage["StorCtl_Mod"] == 1
        assert storage["InWRte"] == pytest.approx(40.0)
        assert inverter.reading().battery_power_w == pytest.approx(-2000, abs=2)
        details = client.get(f"/nodes/{node.id}").json()
        assert details["agent_version"]

        assert client.post(f"/nodes/{node.id}/disable").status_code == 200
        wait_for(
            lambda: '"broker_connected": false' in agent.http("/status.json"),
            15,
            "the agent to lose the broker",
        )
        # ...and its reconnects are refused (Mosquitto's kick sends no last will: the
        # collector's watchdog marks such a node offline by its silence).
        wait_for(
            lambda: "broker refused the connection" in agent.log_path.read_text(),
            15,
            "the broker to refuse the agent's reconnect",
        )
    finally:
        stop_process(agent.proc)
        agent.release()


def test_killed_api_still_settles_the_command_after_restart(
    api_process, database, broker, simulator, collector_factory, tmp_path
):
    collector_factory().start()
    client = admin_client(api_process, database)
    node, agent = enrolled_agent(client, database, broker, simulator, tmp_path, via_proxy=True)
    try:
        wait_for(
            lambda: client.get(f"/nodes/{node.id}").json()["state"] == "online", 30, "node online"
        )
        # The node is away: the command waits at the broker in the node's session.
        agent.proxy.cut()
        response = client.post(f"/nodes/{node.id}/commands?queue=true", json=CHARGE)
        assert response.json()["state"] == "sent"
        command_id = response.json()["id"]
        # The API dies after publishing, before any answer.
        api_process.kill()
        agent.proxy.restore()
        wait_for(
            lambda: (
                "acked succeeded" in agent.log_path.read_text()
                or command_id in agent.log_path.read_text()
            ),
            30,
            "the agent to run the command while the API is down",
        )
        api_process.start()
        client = admin_client(api_process, database)
        done = command_state(client, command_id, "succeeded")
        assert [e["state"] for e in done["events"] if e["source"] == "node"] == [
            "received",
            "succeeded",
        ]
    finally:
        stop_process(agent.proc)
        agent.release()


def test_fetch_logs_from_the_agent_are_stored_and_served(
    api_process, database, broker, simulator, tmp_path
):
    client = admin_client(api_process, database)
    node, agent = enrolled_agent(client, database, broker, simulator, tmp_path)
    try:
        wait_for(lambda: "connected to" in agent.log_path.read_text(), 30, "agent connected")
        # Queued: without a collector the hub never sees the node online.
        response = client.post(
            f"/nodes/{node.id}/commands?queue=true",
            json={"type": "FETCH_LOGS", "params": {"lines": 300}},
        )
        assert response.status_code == 202, response.text
        command_id = response.json()["id"]
        done = command_state(client, command_id, "succeeded")
        sent = int(done["detail"].split()[0])  # "<lines> lines in <chunks> chunks"
        assert 0 < sent <= 300
        wait_for(
            lambda: client.get(f"/commands/{command_id}").json()["logs"]["lines_received"] == sent,
            15,
            "every line the agent sent stored",
        )
        logs = client.get(f"/nodes/{node.id}/logs", params={"command_id": command_id}).json()
        lines = [line for chunk in logs["chunks"] for line in chunk["lines"]]
        assert len(lines) == logs["lines_received"] == sent
        assert [c["chunk"] for c in logs["chunks"]] == list(range(logs["of"]))
        assert any("connected to" in line for line in lines)
    finally:
        stop_process(agent.proc)
        agent.release()


def test_the_agent_reports_its_config_and_a_patch_keeps_everything_else(
    api_process, database, broker, simulator, tmp_path
):
    """Issue 14: a push of one key must not reset the rest (broker, Modbus, buffer)."""
    client = admin_client(api_process, database)
    node, agent = enrolled_agent(client, database, broker, simulator, tmp_path, supervised=True)
    try:

        def reported(version):
            response = client.get(f"/nodes/{node.id}/config")
            body = response.json() if response.status_code == 200 else None
            return body if body and body["version"] == version else None

        first = wait_for(lambda: reported(None), 30, "the agent's first report")
        assert first["source"] == "reported"
        assert first["config"]["buffer_path"] == str(agent.buffer_path)
        assert first["config"]["modbus_port"] == agent.settings["modbus_port"]
        assert "mqtt_password" not in first["config"]
        response = client.patch(
            f"/nodes/{node.id}/config?queue=true", json={"config": {"poll_interval_s": 2.0}}
        )
        assert response.status_code == 202, response.text
        assert response.json()["config"] == {**first["config"], "poll_interval_s": 2.0}
        command_state(client, response.json()["id"], "succeeded", timeout=60)
        second = wait_for(lambda: reported(1), 30, "the report of version 1")
        assert second["config"] == {**first["config"], "poll_interval_s": 2.0}
        running = yaml.safe_load(agent.config.read_text())
        assert running["mqtt_password"] == node.password
        assert running["buffer_path"] == str(agent.buffer_path)
        assert agent.restarts == 1
    finally:
        agent.stop_supervising()
        agent.release()


def test_the_agent_gets_its_sites_zone_and_tariff_from_its_first_report(
    api_process, database, broker, simulator, tmp_path
):
    """Issue 15: the hub owns the site's zone and tariffs; a new agent reports UTC and no
    tariff, is pushed the hub's, runs them, and is left alone after."""
    client = admin_client(api_process, database)
    tariff = {
        "valid_from": "2026-01-01",
        "currency": "PLN",
        "import_price": {"default_price": 1.05},
        "export_price": {"default_price": 0.25},
    }
    tenant = client.post(
        "/tenants", json={"slug": unique("t"), "name": "Site", "timezone": "Europe/Warsaw"}
    ).json()
    set_ = client.post(f"/tenants/{tenant['id']}/tariffs", params={"backdate": "true"}, json=tariff)
    assert set_.status_code == 201, set_.text
    node, agent = enrolled_agent(
        client, database, broker, simulator, tmp_path, supervised=True, tenant=tenant
    )
    try:

        def running(version):
            response = client.get(f"/nodes/{node.id}/config")
            body = response.json() if response.status_code == 200 else None
            return body if body and body["version"] == version else None

        applied = wait_for(lambda: running(1), 60, "the pushed zone and tariff running")
        assert applied["config"]["timezone"] == "Europe/Warsaw"
        expected = TariffVersion.model_validate(tariff).model_dump(mode="json")
        assert applied["config"]["tariffs"] == [expected]
        [push] = client.get(f"/nodes/{node.id}/commands").json()
        assert (push["type"], push["state"], push["issued_by"]) == (
            "CONFIG_PUSH",
            "succeeded",
            None,
        )
        assert agent.restarts == 1
    finally:
        agent.stop_supervising()
        agent.release()
