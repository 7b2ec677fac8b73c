"""The dynamic strategy switched off from the hub, end to end: the control API as a
real process, a real collector, the real edge agent (restarted like systemd would) on
the simulator, Mosquitto and the database. The push reaches the agent, the inverter goes
back to self-consumption, the coordinator is told and held to it, and the hub shows the
setting the site reports."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

import pytest

from edge.commands import STORCTL_AUTO, STORCTL_CHARGE
from tests.control_api.test_end_to_end import CHARGE, admin_client, command_state, enrolled_agent
from tests.edge.test_coordinator import DECISION
from tests.support.services import free_port, wait_for

pytestmark = pytest.mark.e2e


def coordinator(port: int, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}",
        method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as exc:
        return exc.code, json.load(exc)


def test_strategy_switched_off_from_the_hub_puts_the_inverter_back_in_self_consumption(
    api_process,
    database,
    broker,
    simulator,
    inverter,
    collector_factory,
    tmp_path,
):
    collector_factory().start()
    client = admin_client(api_process, database)
    port = free_port()
    node, agent = enrolled_agent(
        client, database, broker, simulator, tmp_path, supervised=True, coordinator_port=port
    )
    try:
        shown = wait_for(
            lambda: (n := client.get(f"/nodes/{node.id}").json())["strategy_enabled"] and n,
            30,
            "the node's strategy report",
        )
        assert shown["strategy"] == "time_of_use"
        wait_for(
            lambda: client.get(f"/nodes/{node.id}/config").status_code == 200,
            30,
            "the node's config report",
        )
        # The coordinator has the battery charging.
        assert coordinator(port, "POST", "/decision", DECISION)[0] == 200
        charge = client.post(f"/nodes/{node.id}/commands", json=CHARGE)
        command_state(client, charge.json()["id"], "succeeded")
        assert inverter.read_model(124)["StorCtl_Mod"] == STORCTL_CHARGE

        off = client.patch(
            f"/nodes/{node.id}/config?queue=true", json={"config": {"strategy_enabled": False}}
        )
        assert off.status_code == 202, off.text
        command_state(client, off.json()["id"], "succeeded", timeout=60)
        wait_for(
            lambda: client.get(f"/nodes/{node.id}").json()["strategy_enabled"] is False,
            30,
            "the hub to show the strategy off",
        )
        wait_for(
            lambda: inverter.read_model(124)["StorCtl_Mod"] == STORCTL_AUTO,
            30,
            "the inverter back in self-consumption",
        )
        status, context = coordinator(port, "GET", "/context")
        assert status == 200
        assert context["strategy"] == {"enabled": False, "name": "time_of_use"}
        status, refused = coordinator(port, "POST", "/decision", DECISION)
        assert status == 409
        assert "dynamic strategy is off" in refused["error"]
        assert (
            coordinator(port, "POST", "/decision", {"mode": "SELF_CONSUMPTION", "reason": "off"})[0]
            == 200
        )
        assert agent.restarts == 1
    finally:
        agent.stop_supervising()
        agent.release()
