from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from contract.commands import (
    MAX_ACK_DETAIL_CHARS,
    Ack,
    CommandEnvelope,
    CommandType,
    PowerParams,
    build_command,
    validate_params,
    verify,
)

SECRET = b"node-secret"
NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


def _command(**overrides):
    body = build_command(
        "node-1",
        SECRET,
        "cmd-1",
        CommandType.FORCE_CHARGE,
        PowerParams(power_w=2500, duration_s=600),
        NOW,
        NOW + timedelta(minutes=5),
    )
    body.update(overrides)
    return body


def test_signed_command_verifies_and_matches_the_envelope_model():
    body = _command()
    assert verify("node-1", body, SECRET)
    envelope = CommandEnvelope.model_validate(body)
    assert envelope.type is CommandType.FORCE_CHARGE
    assert envelope.params == {"power_w": 2500.0, "duration_s": 600}


@pytest.mark.parametrize(
    ("node_id", "secret", "tamper"),
    [
        ("node-2", SECRET, {}),  # replayed to another node
        ("node-1", b"other", {}),  # wrong secret
        ("node-1", SECRET, {"params": {"power_w": 9000, "duration_s": 600}}),
        ("node-1", SECRET, {"expires_at": (NOW + timedelta(days=1)).isoformat()}),
        ("node-1", SECRET, {"sig": "0" * 64}),
        ("node-1", SECRET, {"sig": None}),
        ("node-1", SECRET, {"sig": "\u00e9" * 64}),  # found by the fuzzer: was a TypeError
    ],
)
def test_forged_or_altered_commands_fail_verification(node_id, secret, tamper):
    assert not verify(node_id, _command(**tamper), secret)


def test_params_are_typed_per_command():
    assert validate_params(CommandType.SET_MODE, {"mode": "AUTO"}).model_dump() == {"mode": "AUTO"}
    cases: list[tuple[CommandType, dict[str, object]]] = [
        (CommandType.SET_MODE, {"mode": "TURBO"}),
        (CommandType.FORCE_CHARGE, {"power_w": -1, "duration_s": 60}),
        (CommandType.FORCE_CHARGE, {"power_w": 100, "duration_s": 60, "shell": "rm -rf /"}),
        (CommandType.SELF_UPDATE, {"version": "1.0; curl evil"}),
        (CommandType.RESTART_AGENT, {"now": True}),
    ]
    for command_type, params in cases:
        with pytest.raises(ValidationError):
            validate_params(command_type, params)


def test_an_ack_the_hub_could_not_store_is_malformed():
    ack = {"id": "cmd-1", "state": "failed", "detail": "no battery", "ts": NOW.isoformat()}
    assert Ack.model_validate(ack).detail == "no battery"
    # PostgreSQL text cannot hold NUL: refused here, not retried forever by the hub.
    for bad in (
        {"detail": "bad\x00byte"},
        {"id": "cmd\x00-1"},
        {"id": ""},
        {"detail": "x" * (MAX_ACK_DETAIL_CHARS + 1)},
    ):
        with pytest.raises(ValidationError):
            Ack.model_validate({**ack, **bad})
