"""The ingest confirmation contract: compact ranges, bounded, checked."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from contract.confirmations import (
    INGEST_CONFIRMATION,
    MAX_RANGES,
    confirmation_bodies,
    seq_ranges,
)


def test_seqs_become_sorted_runs_with_repeats_merged() -> None:
    assert seq_ranges([7, 1, 2, 3, 3, 9, 8, 20]) == [(1, 3), (7, 9), (20, 20)]
    assert seq_ranges([]) == []


def test_ranges_from_the_parts_of_a_split_batch_are_joined_into_one_message() -> None:
    (body,) = confirmation_bodies([(5, 9), (0, 3), (4, 4), (8, 12), (20, 20)])
    assert json.loads(body) == {"seqs": [[0, 12], [20, 20]]}


def test_a_confirmation_round_trips_through_its_own_validation() -> None:
    (body,) = confirmation_bodies(seq_ranges(range(0, 5000)))
    assert json.loads(body) == {"seqs": [[0, 4999]]}
    assert INGEST_CONFIRMATION.validate_json(body) == {"seqs": [(0, 4999)]}


def test_more_ranges_than_one_message_holds_are_split() -> None:
    seqs = range(0, 2 * (MAX_RANGES + 10), 2)  # every other seq: one range each
    bodies = list(confirmation_bodies(seq_ranges(seqs)))
    ranges = [tuple(r) for body in bodies for r in json.loads(body)["seqs"]]
    assert [len(json.loads(b)["seqs"]) for b in bodies] == [MAX_RANGES, 10]
    assert ranges == [(s, s) for s in seqs]
    for body in bodies:
        INGEST_CONFIRMATION.validate_json(body)


@pytest.mark.parametrize(
    "payload",
    [
        b'{"seqs": []}',
        b'{"seqs": [[3, 1]]}',
        b'{"seqs": [[-1, 1]]}',
        b'{"seqs": [[1, 9223372036854775808]]}',
        b'{"seqs": [[1.0, 2]]}',
        b'{"seqs": [["1", 2]]}',
        b'{"seqs": [[1, 2, 3]]}',
        b'{"seqs": [[1, 2]], "extra": 1, "seqs": 5}',
        json.dumps({"seqs": [[i, i] for i in range(MAX_RANGES + 1)]}).encode(),
        b"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]",
    ],
)
def test_a_malformed_confirmation_is_refused(payload: bytes) -> None:
    with pytest.raises(ValidationError):
        INGEST_CONFIRMATION.validate_json(payload)
