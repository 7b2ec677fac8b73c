"""The safety lock end to end: the control API as a real process, a real collector, the
real edge agent on the simulator, Mosquitto and the database. A locked site answers
every control command `rejected` (API -> agent -> ack) and the hub, once it knows, queues
none (409); read-only commands still work; a local lock wins over the hub's unlock; a
local unlock is reported and the hub's view follows; the audit shows who locked and why.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import yaml

from contract.commands import COMMAND_KINDS, CommandKind
from contract.node_config import SITE_HELD_KEYS
from contract.site_control import LOCAL_BY_CONFIG
from control_api.site_settings import HUB_KEYS
from tests.control_api.test_end_to_end import CHARGE, admin_client, command_state, enrolled_agent
from tests.control_api.test_tunnel_routes import BASTION, OPEN
from tests.support.control_api import ApiProcess
from tests.support.services import stop_process, wait_for

pytestmark = pytest.mark.e2e

LOGS = {"type": "FETCH_LOGS", "params": {"lines": 20}}


@pytest.fixture
def api_process(database, broker, tmp_path) -> Iterator[ApiProcess]:
    api = ApiProcess(database, broker, tmp_path / "api.log", **BASTION).start()
    try:
        yield api
    finally:
        if api.proc.poll() is None:
            api.stop()


def hub_view(client, node_id: str) -> dict[str, Any]:
    response = client.get(f"/nodes/{node_id}/safety-lock")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


@contextmanager
def reporting_site(
    api_process, database, broker, simulator, collector_factory, tmp_path
) -> Iterator[tuple[Any, Any, Any]]:
    """(admin client, node, agent) once the agent has reported its lock; the agent is
    stopped after."""
    collector_factory().start()
    client = admin_client(api_process, database)
    node, agent = enrolled_agent(client, database, broker, simulator, tmp_path)
    try:
        wait_for(
            lambda: hub_view(client, node.id)["reported_locked"] is False,
            30,
            "the node's first lock report",
        )
        yield client, node, agent
    finally:
        stop_process(agent.proc)
        agent.release()


def issue_each_control_command(client, node_id: str) -> dict[str, str]:
    """One command of every control type, queued; their ids by type."""
    sent = control_requests(client, node_id)
    for response in sent.values():
        assert response.status_code == 202, response.text
    return {kind: response.json()["id"] for kind, response in sent.items()}


def whole_config(client, node_id: str) -> dict[str, Any]:
    """The node's reported config as a PUT may carry it (no site-held nor hub key)."""
    config: dict[str, Any] = client.get(f"/nodes/{node_id}/config").json()["config"]
    return {k: v for k, v in config.items() if k not in (*SITE_HELD_KEYS, *HUB_KEYS)}


def control_requests(client, node_id: str) -> dict[str, Any]:
    """A request for a command of every control type, each through its own route,
    queued; the answers by type."""
    queued = {"queue": "true"}
    sent = {
        "FORCE_CHARGE": client.post(f"/nodes/{node_id}/commands", params=queued, json=CHARGE),
        "DISCHARGE": client.post(
            f"/nodes/{node_id}/commands",
            params=queued,
            json={"type": "DISCHARGE", "params": {"power_w": 1500, "duration_s": 600}},
        ),
        "SET_MODE": client.post(
            f"/nodes/{node_id}/commands",
            params=queued,
            json={"type": "SET_MODE", "params": {"mode": "PASSIVE"}},
        ),
        "RESTART_AGENT": client.post(
            f"/nodes/{node_id}/commands",
            params=queued,
            json={"type": "RESTART_AGENT", "params": {}},
        ),
        "CONFIG_PUSH": client.patch(
            f"/nodes/{node_id}/config", params=queued, json={"config": {"poll_interval_s": 2.0}}
        ),
        "SELF_UPDATE": client.post(
            f"/nodes/{node_id}/update", params=queued, json={"version": "99.0"}
        ),
        "OPEN_TUNNEL": client.post(f"/nodes/{node_id}/tunnel", params=queued, json=OPEN),
    }
    return sent


def audit(client, action: str, node_id: str) -> list[dict[str, Any]]:
    response = client.get("/audit", params={"action": action, "node_id": node_id})
    assert response.status_code == 200, response.text
    rows: list[dict[str, Any]] = response.json()["rows"]
    return rows


def test_a_site_locked_on_site_refuses_every_control_command_and_the_hub_then_queues_none(
    api_process, database, broker, simulator, inverter, collector_factory, tmp_path
):
    with reporting_site(api_process, database, broker, simulator, collector_factory, tmp_path) as (
        client,
        node,
        agent,
    ):
        wait_for(
            lambda: client.get(f"/nodes/{node.id}/config").status_code == 200,
            30,
            "the node's config report",
        )
        mode_before = inverter.read_model(124)["StorCtl_Mod"]
        # While the agent is away the hub knows of no lock: it queues them all...
        stop_process(agent.proc)
        issued = issue_each_control_command(client, node.id)
        control = {t.value for t, kind in COMMAND_KINDS.items() if kind is CommandKind.CONTROL}
        assert set(issued) == control
        # ...and the site locks itself before it comes back (the config key).
        config = yaml.safe_load(agent.config.read_text())
        agent.config.write_text(yaml.safe_dump({**config, "safety_lock": True}))
        agent.start()

        for command_type, command_id in issued.items():
            done = command_state(client, command_id, "rejected")
            assert done["detail"] == (
                f"the site is safety-locked (local, by {LOCAL_BY_CONFIG}: safety_lock: true in"
                f" the agent's config file): {command_type} refused; read-only commands still"
                " work"
            )
        assert inverter.read_model(124)["StorCtl_Mod"] == mode_before
        assert agent.proc.poll() is None  # neither restarted nor updated

        # The heartbeat told the hub: it queues no control command now.
        view = wait_for(
            lambda: (v := hub_view(client, node.id))["locked"] and v,
            30,
            "the hub to learn of the site's lock",
        )
        assert (view["source"], view["by"]) == ("local", LOCAL_BY_CONFIG)
        assert client.get(f"/nodes/{node.id}").json()["safety_locked"] is True
        refused = client.post(f"/nodes/{node.id}/commands", json=CHARGE)
        assert refused.status_code == 409, refused.text
        assert refused.json()["detail"].startswith(
            f"node {node.id} is safety-locked (local, by {LOCAL_BY_CONFIG}:"
        )
        assert "FORCE_CHARGE is refused" in refused.json()["detail"]
        # Every control route, not only the generic one; and none of them stored a command.
        with database.connect() as conn:
            stored_before = conn.execute(
                "SELECT count(*) FROM commands WHERE node_id = %s", (node.id,)
            ).fetchone()
        answers = {
            **control_requests(client, node.id),
            # The whole config, as against the patch.
            "CONFIG_PUSH (PUT)": client.put(
                f"/nodes/{node.id}/config",
                params={"queue": "true"},
                json={"config": whole_config(client, node.id)},
            ),
        }
        for route, answer in answers.items():
            assert answer.status_code == 409, (route, answer.text)
            assert "is safety-locked (local, by " in answer.json()["detail"], route
        with database.connect() as conn:
            assert (
                conn.execute(
                    "SELECT count(*) FROM commands WHERE node_id = %s", (node.id,)
                ).fetchone()
                == stored_before
            )
        # Taking remote access away is not control.
        close = client.delete(f"/nodes/{node.id}/tunnel")
        assert close.status_code == 202, close.text

        # Read-only commands still work.
        logs = client.post(f"/nodes/{node.id}/commands", json=LOGS)
        assert logs.status_code == 202, logs.text
        command_state(client, logs.json()["id"], "succeeded")

        # The hub's unlock does not lift the site's own lock.
        unlock = client.delete(f"/nodes/{node.id}/safety-lock", params={"reason": "storm is over"})
        assert unlock.status_code == 202, unlock.text
        done = command_state(client, unlock.json()["id"], "succeeded")
        assert "the site still holds its own" in done["detail"]
        wait_for(
            lambda: hub_view(client, node.id)["pending_command_id"] is None,
            30,
            "the site to report the hub's unlock",
        )
        assert hub_view(client, node.id)["locked"] is True
        assert client.post(f"/nodes/{node.id}/commands", json=CHARGE).status_code == 409
        [row] = audit(client, "unlock_site", node.id)
        assert row["params"]["params"]["requested_by"] == row["actor_email"]
        assert row["params"]["params"]["reason"] == "storm is over"
        assert row["params"]["params"]["locked"] is False


def page_action(agent, body: dict[str, Any]) -> dict[str, Any]:
    """The status page's lock action, from the Pi itself."""
    port = yaml.safe_load(agent.config.read_text())["status_port"]
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/safety-lock",
        method="POST",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        answer: dict[str, Any] = json.load(response)
        return answer


def test_the_hub_names_the_control_commands_its_lock_cannot_overtake(
    api_process, database, broker, simulator, collector_factory, tmp_path
):
    """The broker hands a node its commands in order: one queued for a node that is away
    reaches it before a lock issued later, and runs. The hub says which are still on
    their way (the probe found the docs claiming they were refused)."""
    with reporting_site(api_process, database, broker, simulator, collector_factory, tmp_path) as (
        client,
        node,
        agent,
    ):
        assert hub_view(client, node.id)["ahead_of_lock"] == []
        stop_process(agent.proc)
        charge = client.post(f"/nodes/{node.id}/commands", params={"queue": "true"}, json=CHARGE)
        assert charge.status_code == 202, charge.text
        logs = client.post(f"/nodes/{node.id}/commands", params={"queue": "true"}, json=LOGS)
        assert logs.status_code == 202, logs.text
        lock = client.put(f"/nodes/{node.id}/safety-lock", json={"reason": "storm warning"})
        assert lock.status_code == 202, lock.text
        view = hub_view(client, node.id)
        assert (view["locked"], view["pending_command_id"]) == (True, lock.json()["id"])
        # Read-only commands are not in the way of anything.
        assert view["ahead_of_lock"] == [charge.json()["id"]]

        agent.start()
        assert command_state(client, charge.json()["id"], "succeeded")
        assert command_state(client, lock.json()["id"], "succeeded")
        view = wait_for(
            lambda: (v := hub_view(client, node.id))["reported_locked"] and v,
            30,
            "the site to report the hub's lock",
        )
        assert (view["pending_command_id"], view["ahead_of_lock"]) == (None, [])


def test_an_admins_lock_is_audited_and_lifted_on_site(
    api_process, database, broker, simulator, collector_factory, tmp_path
):
    collector_factory().start()
    client = admin_client(api_process, database)
    node, agent = enrolled_agent(client, database, broker, simulator, tmp_path)
    try:
        wait_for(
            lambda: client.get(f"/nodes/{node.id}").json()["state"] == "online",
            30,
            "the node online",
        )
        lock = client.put(f"/nodes/{node.id}/safety-lock", json={"reason": "storm warning"})
        assert lock.status_code == 202, lock.text
        # The hub counts its lock from the moment it is issued, before the site reports.
        refused = client.post(f"/nodes/{node.id}/commands", json=CHARGE)
        assert refused.status_code == 409, refused.text
        assert "(remote, by " in refused.json()["detail"]
        assert "storm warning" in refused.json()["detail"]
        assert command_state(client, lock.json()["id"], "succeeded")["detail"] == (
            "locked by the hub"
        )
        view = wait_for(
            lambda: (v := hub_view(client, node.id))["reported_locked"] and v,
            30,
            "the site to report the hub's lock",
        )
        assert (view["source"], view["reason"], view["pending_command_id"]) == (
            "remote",
            "storm warning",
            None,
        )
        [row] = audit(client, "lock_site", node.id)
        assert row["params"]["params"]["reason"] == "storm warning"
        assert row["params"]["params"]["requested_by"] == row["actor_email"]
        assert row["outcome"] == "ok"

        # The person on site lifts it: the hub's lock goes with it, and the hub learns.
        assert page_action(agent, {"locked": False})["locked"] is False
        wait_for(
            lambda: hub_view(client, node.id)["locked"] is False,
            30,
            "the hub to learn of the local unlock",
        )
        charge = client.post(f"/nodes/{node.id}/commands", json=CHARGE)
        assert charge.status_code == 202, charge.text
        command_state(client, charge.json()["id"], "succeeded")
        # A lock set on site: the hub learns who and why.
        page_action(agent, {"locked": True, "reason": "installer at work"})
        view = wait_for(
            lambda: (v := hub_view(client, node.id))["locked"] and v,
            30,
            "the hub to learn of the local lock",
        )
        assert (view["source"], view["reason"]) == ("local", "installer at work")
        with database.connect() as conn:
            history = conn.execute(
                "SELECT (detail->'safety_lock'->>'locked')::boolean,"
                " detail->'safety_lock'->>'source' FROM node_events"
                " WHERE node_id = %s AND detail ? 'safety_lock' ORDER BY ts",
                (node.id,),
            ).fetchall()
        changes = [h for i, h in enumerate(history) if i == 0 or history[i - 1] != h]
        assert changes == [(False, None), (True, "remote"), (False, None), (True, "local")]
    finally:
        stop_process(agent.proc)
        agent.release()
