"""Unit tests of message validation: no broker, no database."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import TypeAdapter, ValidationError

from collector.decode import KEPT_PAYLOAD_BYTES, Decoder, Limits, Reason
from collector.telemetry_row import DECISION_SIGHTING_COLUMNS, SEQ_INDEX, TELEMETRY_COLUMNS
from contract.fields import FIELDS, PG_INTEGER_RANGES
from contract.telemetry import MAX_SAMPLES_PER_BATCH
from tests.support.fleet import sample

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
TOPIC = "nodes/n1/telemetry"
decoder = Decoder(Limits(max_payload_bytes=4096))
# The collector's default limits, for payloads as large as an attacker may send.
roomy_decoder = Decoder(Limits())


def _decode(body, topic=TOPIC, using=decoder):
    payload = body if isinstance(body, bytes) else json.dumps(body).encode()
    return using.decode(topic, payload, NOW)


def test_valid_sample_is_accepted_as_live_as_its_telemetry_row():
    ts = NOW - timedelta(seconds=2)
    out = _decode(sample("n1", 3, ts))
    mode = "SELF_CONSUMPTION"
    # Fixed-point fields as their integers: mV, whole W, ms and mWh.
    energy = [5000, 5000, 2080, 280, 0, 1940, 420, 0, 0, 0, 0]
    row = [ts, "n1", None, 3, 53.0, 52100, -300, 1500, 200, 1400, 0.55, mode, NOW, *energy]
    assert out.rows == [row]
    assert all(type(v) is int for v in row[5:10] + row[13:])
    assert len(row) == len(TELEMETRY_COLUMNS)
    assert [dict(zip(DECISION_SIGHTING_COLUMNS, d, strict=True)) for d in out.decisions] == [
        {
            "ts": ts,
            "decision": "charge from PV",
            "grid_mode": mode,
            "daily_savings": 1.5,
            "daily_cost": 0.4,
            "mode": None,
            "reason": None,
            "battery_setpoint_w": None,
            "target_soc_percent": None,
        }
    ]
    assert out.live
    assert not out.dead


def test_optional_parts_absent_are_null_in_the_row():
    body = sample("n1", 1, NOW)
    del body["load"], body["optimizer"], body["battery"]["voltage"], body["grid"]["power_w"]
    del body["energy"]
    body["battery"]["power_w"] = None
    out = _decode(body)
    assert [dict(zip((c for c, _ in TELEMETRY_COLUMNS), r, strict=True)) for r in out.rows] == [
        {
            "ts": NOW,
            "node_id": "n1",
            "tenant_id": None,
            "seq": 1,
            "soc_percent": 51.0,
            "battery_voltage_mv": None,
            "battery_w": None,
            "solar_w": 1500,
            "grid_w": None,
            "load_w": None,
            "grid_price": 0.55,
            "grid_mode": "SELF_CONSUMPTION",
            "received_at": NOW,
            **dict.fromkeys(
                ("interval_ms", "covered_ms", "pv_mwh", "grid_import_mwh", "grid_export_mwh"), None
            ),
            **dict.fromkeys(("load_mwh", "battery_charge_mwh", "battery_discharge_mwh"), None),
            **dict.fromkeys(("gap_pv_mwh", "gap_grid_import_mwh", "gap_grid_export_mwh"), None),
        }
    ]
    assert out.decisions == []


def test_a_value_finer_than_its_stored_resolution_is_rounded_to_it():
    """Energies to the mWh, powers to the watt, as edge/energy_meter.py counts them."""
    body = sample("n1", 1, NOW, energy={"interval_s": 5.0004, "covered_s": 5.0, "pv_wh": 1.2346})
    body["solar"]["power_w"] = 1499.6
    [row] = _decode(body).rows
    values = dict(zip((c for c, _ in TELEMETRY_COLUMNS), row, strict=True))
    assert (values["interval_ms"], values["pv_mwh"], values["solar_w"]) == (5000, 1235, 1500)


def test_an_energy_part_that_disagrees_with_its_interval_is_implausible():
    """A node claiming more energy than its interval could carry, or more time observed
    than passed, is dead-lettered as implausible, not stored."""
    for energy in (
        {"interval_s": 5.0, "covered_s": 6.0},
        {"interval_s": 5.0, "covered_s": 5.0, "pv_wh": 500.0},
        {"interval_s": 5.0, "covered_s": 5.0, "grid_export_wh": -1.0},
    ):
        out = _decode(sample("n1", 1, NOW, energy=energy))
        assert out.rows == []
        [(reason, _detail)] = [(d.reason, d.detail) for d in out.dead]
        assert reason is Reason.IMPLAUSIBLE_VALUE, energy


def test_replay_batch_is_not_live():
    batch = {"samples": [sample("n1", i, NOW - timedelta(hours=1, seconds=-i)) for i in range(3)]}
    out = _decode(batch)
    assert [r[SEQ_INDEX] for r in out.rows] == [0, 1, 2]
    assert not out.live


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"{", Reason.INVALID_JSON),
        (b"\xc3\x28", Reason.INVALID_JSON),
        (b"[]", Reason.SCHEMA_VIOLATION),
        ({"node_id": "n1"}, Reason.SCHEMA_VIOLATION),
        (sample("n1", 1, NOW, timestamp="2026-11-28T12:00:00"), Reason.SCHEMA_VIOLATION),
        (sample("n1", -1, NOW), Reason.IMPLAUSIBLE_VALUE),
        (sample("n1", 1, NOW, battery={"soc_percent": 100.5}), Reason.IMPLAUSIBLE_VALUE),
        (
            sample("n1", 1, NOW, grid={"current_price": 0.5, "mode": "A", "power_w": -2e5}),
            Reason.IMPLAUSIBLE_VALUE,
        ),
        (
            b'{"node_id":"n1","timestamp":"2026-11-28T12:00:00Z","seq":1,"battery":'
            b'{"soc_percent":NaN},"solar":{"power_w":0},"grid":{"current_price":0,"mode":"A"}}',
            Reason.IMPLAUSIBLE_VALUE,
        ),
        (sample("n2", 1, NOW), Reason.NODE_ID_MISMATCH),
        (sample("n1", 1, NOW + timedelta(minutes=6)), Reason.TIMESTAMP_IN_FUTURE),
        (sample("n1", 1, NOW - timedelta(days=31)), Reason.TIMESTAMP_TOO_OLD),
        ({"samples": []}, Reason.SCHEMA_VIOLATION),
        ({"samples": "all of them"}, Reason.SCHEMA_VIOLATION),
    ],
)
def test_each_rejection_has_its_reason(body, reason):
    out = _decode(body)
    assert not out.rows
    assert [d.reason for d in out.dead] == [reason]


def test_small_future_skew_is_tolerated():
    assert _decode(sample("n1", 1, NOW + timedelta(minutes=4))).rows


def test_oversized_payload_keeps_its_head_only():
    out = _decode(sample("n1", 1, NOW, padding="x" * 10_000))
    (dead,) = out.dead
    assert dead.reason is Reason.PAYLOAD_TOO_LARGE
    assert len(dead.payload) == KEPT_PAYLOAD_BYTES


def test_status_payloads_and_foreign_topics():
    ok = decoder.decode("nodes/n1/status", b'{"state":"online","ts":"2026-11-28T12:00:00Z"}', NOW)
    assert ok.status is not None
    assert ok.status["state"] == "online"
    bad = decoder.decode("nodes/n1/status", b'{"state":"dancing","ts":"2026-11-28T12:00:00Z"}', NOW)
    assert [d.reason for d in bad.dead] == [Reason.SCHEMA_VIOLATION]
    foreign = decoder.decode("nodes/n1/commands", b"{}", NOW)
    assert [d.reason for d in foreign.dead] == [Reason.UNEXPECTED_TOPIC]


def test_the_heartbeat_says_its_buffer_depth():
    heartbeat = b'{"state":"online","ts":"2026-11-28T12:00:00Z","buffer_depth":42}'
    ok = decoder.decode("nodes/n1/status", heartbeat, NOW)
    assert ok.status is not None
    assert ok.status["buffer_depth"] == 42
    negative = heartbeat.replace(b"42", b"-1")
    bad = decoder.decode("nodes/n1/status", negative, NOW)
    assert [d.reason for d in bad.dead] == [Reason.IMPLAUSIBLE_VALUE]


# -- Hostile payloads (issue 12): each is a dead letter with a reason, never an exception --


def test_an_integer_its_column_cannot_hold_is_implausible():
    """seq 2**63 validated, then overflowed the int8 column in the writer's COPY."""
    largest = _decode(sample("n1", 2**63 - 1, NOW))
    assert [r[SEQ_INDEX] for r in largest.rows] == [2**63 - 1]
    for seq in (2**63, 10**30):
        out = _decode(sample("n1", seq, NOW))
        assert not out.rows
        assert [d.reason for d in out.dead] == [Reason.IMPLAUSIBLE_VALUE]
        assert "seq" in out.dead[0].detail
    batch = _decode({"samples": [sample("n1", 1, NOW), sample("n1", 2**64, NOW)]})
    assert [r[SEQ_INDEX] for r in batch.rows] == [1]
    assert [d.reason for d in batch.dead] == [Reason.IMPLAUSIBLE_VALUE]


@pytest.mark.parametrize(
    "field", [f for f in FIELDS if f.wire is not None and f.pg_type in PG_INTEGER_RANGES]
)
def test_every_integer_on_the_wire_is_bounded_by_its_column(field):
    lowest, highest = PG_INTEGER_RANGES[field.pg_type]
    checked = TypeAdapter(field.checked_type)
    assert checked.validate_python(highest) == highest
    for outside in (lowest - 1, highest + 1):
        with pytest.raises(ValidationError):
            checked.validate_python(outside)


@pytest.mark.parametrize("opener", [b"[", b'{"a":'])
def test_a_deeply_nested_payload_is_refused_before_any_recursive_parse(opener):
    """50,000 levels in 100 KB: the fallback parser's RecursionError killed the writer."""
    closer = b"]" if opener == b"[" else b"}"
    for body in (
        b'{"samples": ' + opener * 50_000 + closer * 50_000 + b"}",
        b'{"samples":[' + opener * 50_000 + closer * 50_000 + b"]}",
        opener * 50_000 + closer * 50_000,
    ):
        out = _decode(body, using=roomy_decoder)
        assert not out.rows
        assert [d.reason for d in out.dead] == [Reason.INVALID_JSON]
        assert "recursion limit exceeded" in out.dead[0].detail


def test_the_word_samples_inside_a_sample_does_not_make_it_a_batch():
    quoted_value = sample("n1", 1, NOW, grid={"current_price": 0.5, "mode": "samples"})
    unknown_key = sample("n1", 2, NOW, samples=3)
    unknown_list = {"samples": [1, 2], **sample("n1", 3, NOW)}  # first, as a batch starts
    for body in (quoted_value, unknown_key, unknown_list):
        out = _decode(json.dumps(body, separators=(",", ":")).encode())
        assert not out.dead
        assert [r[SEQ_INDEX] for r in out.rows] == [body["seq"]]
        assert out.live


def test_a_batch_is_known_by_its_shape_however_it_is_spelled():
    samples = [sample("n1", i, NOW - timedelta(minutes=5 - i)) for i in range(3)]
    for body in (
        b'{ "samples" : ' + json.dumps(samples).encode() + b"}",
        json.dumps({"padding": 1, "samples": samples}).encode(),
    ):
        out = _decode(body)
        assert not out.dead
        assert [r[SEQ_INDEX] for r in out.rows] == [0, 1, 2]
        assert not out.live


@pytest.mark.parametrize("bad_sample", [False, True])
def test_a_batch_over_the_sample_limit_is_refused_whole(bad_sample):
    """The whole-batch check caught it, but the per-sample fallback stored it."""
    samples = [sample("n1", i, NOW) for i in range(MAX_SAMPLES_PER_BATCH + 1)]
    if bad_sample:
        samples[3]["battery"]["soc_percent"] = 101
    out = _decode(
        json.dumps({"samples": samples}, separators=(",", ":")).encode(), using=roomy_decoder
    )
    assert not out.rows
    assert [d.reason for d in out.dead] == [Reason.SCHEMA_VIOLATION]
    assert f"at most {MAX_SAMPLES_PER_BATCH} items" in out.dead[0].detail
    at_the_limit = _decode({"samples": samples[:MAX_SAMPLES_PER_BATCH]}, using=roomy_decoder)
    assert len(at_the_limit.rows) == MAX_SAMPLES_PER_BATCH - bad_sample


@pytest.mark.parametrize(
    ("body", "seq"),
    [
        (sample("n1", 3, NOW, battery={"soc_percent": 100.5}), 3),
        (sample("n1", 4, NOW, timestamp="yesterday"), 4),
        (sample("n2", 5, NOW), 5),
        (sample("n1", 6, NOW + timedelta(minutes=6)), 6),
        (sample("n1", -1, NOW), None),
        (sample("n1", 2**63, NOW), None),
        # Read as the sample schema reads a seq (which takes "7" for 7).
        ({**sample("n1", 0, NOW, battery={"soc_percent": 150}), "seq": "7"}, 7),
        ({**sample("n1", 0, NOW, battery={"soc_percent": 150}), "seq": "seven"}, None),
        ({**sample("n1", 0, NOW, battery={"soc_percent": 150}), "seq": 7.5}, None),
        ({"node_id": "n1"}, None),
        (b"{not json", None),
        ({"samples": "all of them"}, None),
    ],
)
def test_a_refused_sample_keeps_its_seq_when_it_is_one_a_seq_can_be(body, seq):
    """What the hub confirms to the node as dead for good (collector/confirmations.py)."""
    (letter,) = _decode(body).dead
    assert letter.seq == seq


def test_each_refused_sample_of_a_batch_keeps_its_own_seq():
    bad = [
        sample("n1", 1, NOW, battery={"soc_percent": 150}),
        {**sample("n1", 2, NOW), "seq": "two"},
        sample("n1", 3, NOW - timedelta(days=31)),
    ]
    out = _decode({"samples": [sample("n1", 0, NOW - timedelta(seconds=1)), *bad]})
    assert [row[SEQ_INDEX] for row in out.rows] == [0]
    assert [d.seq for d in out.dead] == [1, None, 3]
