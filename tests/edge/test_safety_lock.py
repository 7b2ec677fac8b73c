"""The site's safety lock on the agent: who holds it, who may lift it, that it survives
restarts, and the status page's local-only lock action over real HTTP."""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.message import Message
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from contract.commands import CommandType, SafetyLockParams
from contract.site_control import LOCAL_BY_CONFIG, LOCAL_BY_PAGE
from contract.telemetry import NODE_STATUS
from edge.json_reply import RequestRefusedError
from edge.safety_lock import STATE_NAME, SafetyLock, SafetyLockError
from edge.status_page import StatusServer, check_local
from tests.support.services import free_port

T0 = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)
LOCK = SafetyLockParams(locked=True, requested_by="admin@example.com", reason="storm")
UNLOCK = SafetyLockParams(locked=False, requested_by="admin@example.com", reason="over")


def lock(tmp_path: Path, config_locked: bool = False) -> SafetyLock:
    return SafetyLock(tmp_path, config_locked, lambda: T0)


def test_the_hubs_lock_is_reported_and_lifted_by_the_hubs_unlock(tmp_path):
    site = lock(tmp_path)
    assert site.status() == {"locked": False, "remote_command_id": None}
    assert site.apply_remote("cmd-1", T0, LOCK) == "locked by the hub"
    assert site.status() == {
        "locked": True,
        "source": "remote",
        "by": "admin@example.com",
        "reason": "storm",
        "since": T0.isoformat(),
        "remote_command_id": "cmd-1",
    }
    # What the heartbeat carries is what the contract takes.
    NODE_STATUS.validate_python({"state": "online", "ts": T0, "safety_lock": site.status()})
    assert site.apply_remote("cmd-2", T0, UNLOCK) == "unlocked"
    assert site.status() == {"locked": False, "remote_command_id": "cmd-2"}
    # A lock issued before that unlock, arriving late, changes nothing.
    late = site.apply_remote("cmd-0", T0 - timedelta(seconds=1), LOCK)
    assert late == "ignored: the hub's lock command cmd-2 is newer"
    assert site.status() == {"locked": False, "remote_command_id": "cmd-2"}


def test_a_local_lock_wins_over_the_hubs_unlock(tmp_path):
    site = lock(tmp_path)
    site.apply_remote("cmd-1", T0, LOCK)
    site.lock_locally("installer on the roof")
    detail = site.apply_remote("cmd-2", T0, UNLOCK)
    assert detail == f"the hub's lock lifted; the site still holds its own ({LOCAL_BY_PAGE})"
    status = site.status()
    assert (status["locked"], status["source"], status["reason"]) == (
        True,
        "local",
        "installer on the roof",
    )
    assert site.refusal(CommandType.FORCE_CHARGE) == (
        f"the site is safety-locked (local, by {LOCAL_BY_PAGE}: installer on the roof):"
        " FORCE_CHARGE refused; read-only commands still work"
    )


def test_an_unlocked_site_has_no_refusal(tmp_path):
    # The command worker asks once: the lock may be lifted on the page (another thread)
    # between two looks, and the second must not find a lock's fields gone.
    site = lock(tmp_path)
    assert site.refusal(CommandType.FORCE_CHARGE) is None
    site.lock_locally("kept")
    site.unlock_locally()
    assert site.refusal(CommandType.FORCE_CHARGE) is None


def test_a_local_unlock_lifts_the_hubs_lock_too_and_survives_a_restart(tmp_path):
    site = lock(tmp_path)
    site.apply_remote("cmd-1", T0, LOCK)
    site.lock_locally("checking the wiring")
    site.unlock_locally()
    # The report keeps the hub's command id: the hub sees its lock was seen, then lifted.
    assert site.status() == {"locked": False, "remote_command_id": "cmd-1"}
    site.apply_remote("cmd-2", T0, LOCK)
    assert lock(tmp_path).status()["by"] == "admin@example.com"  # a restart keeps it


def test_the_config_files_lock_is_lifted_only_in_the_file(tmp_path):
    site = lock(tmp_path, config_locked=True)
    assert site.status()["by"] == LOCAL_BY_CONFIG
    with pytest.raises(SafetyLockError, match="set safety_lock: false"):
        site.unlock_locally()
    site.apply_remote("cmd-1", T0, UNLOCK)
    assert site.locked
    assert lock(tmp_path, config_locked=True).status()["since"] == T0.isoformat()
    assert not lock(tmp_path, config_locked=False).locked


def test_an_unreadable_lock_file_keeps_the_site_locked(tmp_path):
    (tmp_path / STATE_NAME).write_text("{not json")
    site = lock(tmp_path)
    assert site.locked
    assert site.status()["source"] == "local"
    site.unlock_locally()
    assert not lock(tmp_path).locked


@pytest.mark.parametrize(
    "content",
    [
        "[]",
        "null",
        "1",
        '{"page": {}}',
        '{"page": "yes"}',
        '{"remote": "x"}',
        '{"remote": {"locked": true, "issued_at": 5}}',
        '{"page": {"reason": 1, "since": null}}',
    ],
)
def test_a_lock_file_of_another_shape_keeps_the_site_locked(tmp_path, content):
    # JSON that is not the lock's state is as damaged as a file that is not JSON: the
    # site is not unlocked by it, and the agent does not fail on it.
    (tmp_path / STATE_NAME).write_text(content)
    site = lock(tmp_path)
    assert site.locked
    assert site.status()["reason"].startswith("unreadable lock state: ")
    NODE_STATUS.validate_python({"state": "online", "ts": T0, "safety_lock": site.status()})
    assert site.apply_remote("cmd-1", T0, UNLOCK) == (
        f"the hub's lock lifted; the site still holds its own ({LOCAL_BY_PAGE})"
    )
    site.unlock_locally()
    assert not lock(tmp_path).locked


def test_a_lock_state_that_cannot_be_written_at_start_still_locks(tmp_path):
    # A directory where the file goes: neither read nor written. The agent still starts
    # (it monitors the site), locked by the file it could not read and by the config.
    (tmp_path / STATE_NAME).mkdir()
    site = lock(tmp_path, config_locked=True)
    assert site.status()["by"] == LOCAL_BY_CONFIG


@pytest.fixture
def page(tmp_path) -> Iterator[tuple[SafetyLock, int]]:
    site = lock(tmp_path)
    port = free_port()
    server = StatusServer("127.0.0.1", port, dict, CollectorRegistry(), site)
    server.start()
    try:
        yield site, port
    finally:
        server.stop()


def action(
    port: int, body: Any, host: str | None = None, content_type: str = "application/json"
) -> tuple[int, Any]:
    headers = {"Content-Type": content_type}
    if host is not None:
        headers["Host"] = host
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/safety-lock",
        method="POST",
        data=json.dumps(body).encode(),
        headers=headers,
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as exc:
        return exc.code, json.load(exc)


def test_the_status_page_locks_and_unlocks_from_the_pi_itself(page):
    site, port = page
    status, body = action(port, {"locked": True, "reason": "installer on site"})
    assert status == 200
    assert (body["locked"], body["by"], body["reason"]) == (
        True,
        LOCAL_BY_PAGE,
        "installer on site",
    )
    assert site.locked
    assert action(port, {"locked": False}) == (200, {"locked": False, "remote_command_id": None})


@pytest.mark.parametrize(
    ("body", "host", "content_type", "status", "error"),
    [
        # A web page the Pi's browser opened, reaching the agent under its own name.
        ({"locked": False}, "evil.example:8080", "application/json", 403, "127.0.0.1"),
        # A cross-site form post.
        ({"locked": False}, None, "text/plain", 415, "application/json"),
        ({"locked": True}, None, "application/json", 400, "needs a reason"),
        ({"locked": "yes", "reason": "x"}, None, "application/json", 400, "boolean"),
        ({"locked": True, "reason": "x", "by": "me"}, None, "application/json", 400, "Extra"),
    ],
)
def test_the_status_page_refuses_what_is_not_the_pages_own_request(
    page, body, host, content_type, status, error
):
    site, port = page
    site.lock_locally("kept")
    answer = action(port, body, host, content_type)
    assert answer[0] == status
    assert error in answer[1]["error"]
    assert site.status()["reason"] == "kept"


@pytest.mark.parametrize("length", ["²", "1e3", "-1", " "])
def test_a_content_length_that_is_no_number_is_answered(page, length):
    """A superscript digit passed str.isdigit and then failed int(): the connection was
    dropped without an answer, a traceback in the agent's log."""
    site, port = page
    site.lock_locally("kept")
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(
            b"POST /safety-lock HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json"
            # Header bytes are Latin-1: 0xB2 is "²".
            + f"\r\nContent-Length: {length}\r\n\r\n".encode("latin-1")
        )
        assert conn.recv(1000).startswith(b"HTTP/1.0 411")
    assert site.status()["reason"] == "kept"


def test_a_peer_on_the_lan_may_not_set_the_lock():
    headers = Message()
    headers["Host"] = "127.0.0.1:8080"
    headers["Content-Type"] = "application/json"
    check_local("127.0.0.1", headers)
    with pytest.raises(RequestRefusedError, match="only on the Pi itself"):
        check_local("192.168.1.20", headers)


def test_the_page_may_not_be_framed_by_another_page(page):
    # A page the Pi's browser opens could otherwise show the status page in a frame
    # under its own decoy and have the person at the Pi click Unlock (clickjacking).
    _site, port = page
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as response:
        assert response.headers["X-Frame-Options"] == "DENY"
        assert response.headers["Content-Security-Policy"] == "frame-ancestors 'none'"
