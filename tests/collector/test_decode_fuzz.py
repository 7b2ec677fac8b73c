"""Property-based fuzzing of the collector's decoder (hypothesis): whatever a node
publishes, `Decoder.decode` returns rows, a status or dead letters with a reason, never
raises, and every row it returns fits the columns it is written to (an int8 overflow or
an unencodable string there used to kill the batch writer). Bounded to a few seconds."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from collector.decode import DecodedMessage, Decoder, Limits, Reason
from collector.telemetry_row import TELEMETRY_COLUMNS
from contract.fields import PG_INTEGER_RANGES
from tests.support.fleet import sample

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
NODE = "n1"
decoder = Decoder(Limits())

FUZZ = settings(
    max_examples=200,
    deadline=timedelta(seconds=2),
    database=None,  # no .hypothesis/ folder in the checkout
)

# Every kind of JSON value, with what has hurt or could hurt a parser or a column: huge
# integers, NaN and infinities, NUL, lone surrogates (json.dumps escapes them), any
# unicode.
scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=2**62, max_value=2**70)
    | st.integers(max_value=-(2**62), min_value=-(2**70))
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(st.characters(codec=None, categories=None), max_size=20)
    | st.sampled_from(["\x00", "\ud800", "\udfff", "samples", "2026-11-28T12:00:00Z", ""])
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


def _paths(body: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(body, dict):
        for key, value in body.items():
            out.extend(_paths(value, (*prefix, key)))
    return out


@st.composite
def mutated(draw: st.DrawFn, body: Any) -> Any:
    """`body` (a valid payload, fresh) with one thing changed: a value replaced, a key
    added or removed."""
    path = draw(st.sampled_from(_paths(body)))
    action = draw(st.sampled_from(["replace", "add", "remove"]))
    if not path:
        return draw(values) if action == "replace" else body
    parent = body
    for key in path[:-1]:
        parent = parent[key]
    if action == "replace":
        parent[path[-1]] = draw(values)
    elif action == "add" and isinstance(parent[path[-1]], dict):
        parent[path[-1]][draw(st.sampled_from(["samples", "seq", "", "x"]))] = draw(values)
    else:
        del parent[path[-1]]
    return body


def near_valid_samples() -> st.SearchStrategy[Any]:
    return st.integers(0, 10**6).flatmap(
        lambda seq: mutated(sample(NODE, seq, NOW - timedelta(seconds=5)))
    )


def near_valid_statuses() -> st.SearchStrategy[Any]:
    return st.integers(0, 10**6).flatmap(
        lambda depth: mutated(
            {
                "state": "online",
                "ts": NOW.isoformat(),
                "agent_version": "1.2.3",
                "buffer_depth": depth,
            }
        )
    )


@st.composite
def near_valid_payloads(draw: st.DrawFn) -> bytes:
    """A near-valid sample or batch of them, maybe nested deep, as JSON bytes."""
    samples = draw(st.lists(near_valid_samples(), min_size=1, max_size=5))
    shape = draw(st.sampled_from(["sample", "batch", "batch with more keys", "nested"]))
    separators = (",", ":") if draw(st.booleans()) else None
    if shape == "nested":  # built as text: json.dumps itself recurses
        depth = draw(st.integers(1, 3_000))
        inner = json.dumps(samples[0], separators=separators)
        return f'{{"samples":{"[" * depth}{inner}{"]" * depth}}}'.encode()
    document: Any = samples[0]
    if shape == "batch":
        document = {"samples": samples}
    elif shape == "batch with more keys":
        extra = samples[0] if isinstance(samples[0], dict) else {"node_id": NODE}
        document = {"samples": samples, **extra}
    return json.dumps(document, separators=separators).encode()


def _fits_its_column(value: Any, pg_type: str) -> bool:
    if value is None:
        return True
    if pg_type in PG_INTEGER_RANGES:
        lowest, highest = PG_INTEGER_RANGES[pg_type]
        return isinstance(value, int) and lowest <= value <= highest
    if pg_type == "float8":
        return isinstance(value, float) and math.isfinite(value)
    if pg_type == "text":
        value.encode("utf-8")  # a lone surrogate raises here, as in the writer's COPY
        return isinstance(value, str)
    return isinstance(value, datetime) and value.tzinfo is not None


def _check(out: DecodedMessage) -> None:
    assert out.rows or out.status is not None or out.dead
    for letter in out.dead:
        assert isinstance(letter.reason, Reason)
        assert letter.detail
        letter.detail.encode("utf-8")
        assert isinstance(letter.payload, bytes)
    for row in out.rows:
        assert len(row) == len(TELEMETRY_COLUMNS)
        for value, (column, pg_type) in zip(row, TELEMETRY_COLUMNS, strict=True):
            if column != "tenant_id":  # set by the writer
                assert _fits_its_column(value, pg_type), (column, value)


@FUZZ
@given(st.binary(max_size=4_096), st.sampled_from(["telemetry", "status"]))
def test_arbitrary_bytes_are_rows_or_dead_letters(payload, kind):
    _check(decoder.decode(f"nodes/{NODE}/{kind}", payload, NOW))


@FUZZ
@given(near_valid_payloads())
def test_near_valid_payloads_are_rows_or_dead_letters(payload):
    _check(decoder.decode(f"nodes/{NODE}/telemetry", payload, NOW))


@FUZZ
@given(near_valid_statuses())
def test_near_valid_statuses_are_a_status_or_dead_letters(body):
    _check(decoder.decode(f"nodes/{NODE}/status", json.dumps(body).encode(), NOW))
