"""The coordinator interface over real HTTP: a decision posted to the agent travels in
every sample it buffers (and so publishes) until it expires; bad bodies are refused
with a reason and change nothing; /context tells a coordinator what it needs."""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from edge.agent import Agent
from tests.edge.simulated_site import SiteClock, simulated_site
from tests.support.services import free_port

pytestmark = pytest.mark.integration

NOON = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)  # 14:00 in Warsaw (CEST)
TARIFF = {
    "valid_from": "2026-01-01",
    "currency": "PLN",
    "import_price": {
        "default_price": 0.8,
        "periods": [
            {"name": "night", "from_hour": 0, "to_hour": 6, "price": 0.4},
            {"name": "afternoon", "from_hour": 13, "to_hour": 15, "price": 0.6},
        ],
    },
    "export_price": {"default_price": 0.2},
}
DECISION = {
    "mode": "CHARGE_FROM_GRID",
    "reason": "cheapest hour of the day",
    "battery_setpoint_w": -2500,
    "target_soc_percent": 90,
    "valid_for_s": 300,
}


@pytest.fixture
def site(tmp_path) -> Iterator[tuple[Agent, SiteClock, int]]:
    port = free_port()
    with simulated_site(
        tmp_path, NOON, coordinator_port=port, timezone="Europe/Warsaw", tariffs=[TARIFF]
    ) as (agent, _inverter, clock):
        assert agent.coordinator_server is not None
        agent.coordinator_server.start()
        try:
            yield agent, clock, port
        finally:
            agent.coordinator_server.stop()


def call(
    port: int,
    method: str,
    path: str,
    body: bytes | None = None,
    content_type: str = "application/json",
    host: str | None = None,
) -> tuple[int, Any]:
    headers = {"Content-Type": content_type}
    if host is not None:
        headers["Host"] = host
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}",
        method=method,
        data=body,
        headers=headers,
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as exc:
        return exc.code, json.load(exc)


def post(port: int, decision: Any) -> tuple[int, Any]:
    return call(port, "POST", "/decision", json.dumps(decision).encode())


def last_sample(agent: Agent) -> dict[str, Any]:
    pending, _ = agent.buffer.pending(10_000)
    return dict(json.loads(pending[-1][1]))


@pytest.mark.parametrize("host", ["attacker.example", "attacker.example:8081", "192.168.1.5"])
def test_a_request_under_another_name_is_refused(site, host):
    # A web page the Pi's browser opens could reach 127.0.0.1 under its own name (DNS
    # rebinding) and, being same-origin then, post decisions or read the site's context.
    _agent, _clock, port = site
    decision = json.dumps(DECISION).encode()
    status, answer = call(port, "POST", "/decision", decision, host=host)
    assert (status, answer) == (403, {"error": "ask as http://127.0.0.1 (the Host header)"})
    assert call(port, "GET", "/decision") == (200, None)
    assert call(port, "GET", "/context", host=host)[0] == 403
    for loopback in ("127.0.0.1", "localhost:8081", "[::1]:8081"):
        assert call(port, "GET", "/decision", host=loopback) == (200, None)


def test_a_decision_travels_in_every_sample_until_it_expires(site):
    agent, clock, port = site
    agent.poll()
    assert "optimizer" not in last_sample(agent)

    status, answer = post(port, DECISION)
    assert status == 200
    assert answer["mode"] == "CHARGE_FROM_GRID"
    assert answer["expires_at"] == "2026-06-01T12:05:00+00:00"
    for _ in range(2):
        clock.advance(5)
        agent.poll()
        assert last_sample(agent)["optimizer"] == {
            "latest_decision": "CHARGE_FROM_GRID",
            "mode": "CHARGE_FROM_GRID",
            "reason": "cheapest hour of the day",
            "battery_setpoint_w": -2500,
            "target_soc_percent": 90,
        }

    status, answer = post(port, {"mode": "SELF_CONSUMPTION", "reason": "sunny"})
    assert status == 200
    clock.advance(5)
    agent.poll()
    assert last_sample(agent)["optimizer"] == {
        "latest_decision": "SELF_CONSUMPTION",
        "mode": "SELF_CONSUMPTION",
        "reason": "sunny",
        "battery_setpoint_w": None,
        "target_soc_percent": None,
    }
    assert call(port, "GET", "/decision")[1]["mode"] == "SELF_CONSUMPTION"

    clock.advance(900)  # the default validity
    agent.poll()
    assert "optimizer" not in last_sample(agent)
    assert call(port, "GET", "/decision") == (200, None)


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"{not json", "Invalid JSON"),
        (json.dumps({**DECISION, "battery_setpoint_w": 200_000}).encode(), "battery_setpoint_w"),
        (json.dumps({**DECISION, "target_soc_percent": 101}).encode(), "target_soc_percent"),
        (json.dumps({**DECISION, "target_soc_percent": "90"}).encode(), "target_soc_percent"),
        (json.dumps({**DECISION, "valid_for_s": 0}).encode(), "valid_for_s"),
        (json.dumps({**DECISION, "mode": ""}).encode(), "mode"),
        (json.dumps({**DECISION, "mode": "M" * 65}).encode(), "mode"),
        (json.dumps({**DECISION, "reason": "r" * 501}).encode(), "reason"),
        (json.dumps({**DECISION, "reason": "a\u0000b"}).encode(), "U+0000"),
        (json.dumps({**DECISION, "extra": 1}).encode(), "extra"),
        (json.dumps({"reason": "no mode"}).encode(), "mode"),
        (b'{"mode": "X", "reason": "r", "battery_setpoint_w": NaN}', "battery_setpoint_w"),
        (b"[]", "Input should be an object"),
    ],
)
def test_a_bad_decision_is_refused_with_a_reason_and_changes_nothing(site, body, reason):
    agent, _clock, port = site
    assert post(port, DECISION)[0] == 200
    status, answer = call(port, "POST", "/decision", body)
    assert status == 400
    assert reason in answer["error"]
    assert call(port, "GET", "/decision")[1]["mode"] == "CHARGE_FROM_GRID"
    agent.poll()
    assert last_sample(agent)["optimizer"]["reason"] == "cheapest hour of the day"


def test_oversized_unlengthed_and_non_json_bodies_are_refused(site):
    _agent, _clock, port = site
    big = json.dumps({**DECISION, "reason": "x" * 5000}).encode()
    status, answer = call(port, "POST", "/decision", big)
    assert (status, answer["error"]) == (413, "the body is over 4096 bytes")
    status, answer = call(port, "POST", "/decision", b"mode=X", "application/x-www-form-urlencoded")
    assert status == 415
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(
            b"POST /decision HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        assert conn.recv(1000).startswith(b"HTTP/1.0 411")
    # A superscript digit passes str.isdigit, not int(): no answer at all, once.
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(
            b"POST /decision HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            + "Content-Length: \u00b2\r\n\r\n".encode("latin-1")
        )
        assert conn.recv(1000).startswith(b"HTTP/1.0 411")
    assert call(port, "GET", "/decision") == (200, None)
    assert call(port, "GET", "/nowhere")[0] == 404


def test_the_context_has_what_a_coordinator_needs(site):
    agent, _clock, port = site
    agent.poll()
    post(port, DECISION)
    status, context = call(port, "GET", "/context")
    assert status == 200
    assert context["timezone"] == "Europe/Warsaw"
    assert context["local_time"] == "2026-06-01T14:00:00+02:00"
    assert context["strategy"] == {"enabled": True, "name": "time_of_use"}
    assert context["safety_lock"] == {"locked": False, "remote_command_id": None}
    assert context["prices_now"] == {
        "import_per_kwh": 0.6,
        "export_per_kwh": 0.2,
        "currency": "PLN",
        "period": "afternoon",
    }
    hours = context["prices_today"]
    assert len(hours) == 24
    assert hours[0]["start"] == "2026-06-01T00:00:00+02:00"
    assert [h["import_per_kwh"] for h in hours[:7]] == [0.4] * 6 + [0.8]
    assert context["tariffs"][0]["currency"] == "PLN"
    assert context["reading"]["soc_percent"] == pytest.approx(50.0)
    assert context["reading"]["at"] == "2026-06-01T12:00:00+00:00"
    assert context["decision"]["mode"] == "CHARGE_FROM_GRID"
    # The sample's price is the tariff's, in local time.
    assert last_sample(agent)["grid"]["current_price"] == 0.6
