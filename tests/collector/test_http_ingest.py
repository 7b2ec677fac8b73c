"""The HTTPS telemetry endpoint as a real process over TLS, on the real database: what
it stores, confirms, dead-letters and refuses, through the agent's own client."""

from __future__ import annotations

import json
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from contract.http_ingest import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    IngestAnswer,
    ingest_path,
    signature,
)
from edge.http_ingest import HttpIngestClient, IngestError
from tests.support.fleet import (
    count_rows,
    create_tenant,
    dead_letters,
    sample,
    scrape,
    stored_seqs,
)
from tests.support.http_ingest import HttpIngestProcess, http_ingest, node_with_secret
from tests.support.proxy import proxy_for_database
from tests.support.services import Database, wait_for

pytestmark = pytest.mark.integration

MAX_BODY = 65_536
RATE = "20/minute"


@pytest.fixture(scope="module")
def endpoint(database: Database) -> Iterator[HttpIngestProcess]:
    with http_ingest(database, max_payload_bytes=MAX_BODY, http_ingest_rate_per_node=RATE) as proc:
        yield proc


@pytest.fixture
def tenant(database: Database) -> int:
    return create_tenant(database)


def client(endpoint: HttpIngestProcess, node_id: str, secret: bytes) -> HttpIngestClient:
    return HttpIngestClient(endpoint.url, node_id, secret, endpoint.ca_file, timeout_s=10)


def batch(*samples: dict[str, Any]) -> bytes:
    return json.dumps({"samples": list(samples)}).encode()


def raw_post(
    endpoint: HttpIngestProcess, path: str, body: bytes, headers: dict[str, str]
) -> tuple[int, dict[str, Any], dict[str, str]]:
    """Status, JSON body and headers of a POST the test builds itself."""
    request = urllib.request.Request(endpoint.url + path, data=body, method="POST", headers=headers)
    context = ssl.create_default_context(cafile=endpoint.ca_file)
    try:
        with urllib.request.urlopen(request, timeout=10, context=context) as response:
            return response.status, json.loads(response.read()), dict(response.headers)
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, json.loads(exc.read()), dict(exc.headers)


def signed(
    node_id: str, secret: bytes, body: bytes, timestamp: int | None = None
) -> dict[str, str]:
    ts = str(int(time.time()) if timestamp is None else timestamp)
    return {
        TIMESTAMP_HEADER: ts,
        SIGNATURE_HEADER: signature(secret, "POST", ingest_path(node_id), ts, body),
    }


def test_a_sample_and_a_batch_are_stored_and_confirmed_once(
    endpoint: HttpIngestProcess, database: Database, tenant: int
) -> None:
    node_id, secret = node_with_secret(database, tenant)
    node = client(endpoint, node_id, secret)

    one = node.post(json.dumps(sample(node_id, 5)).encode())
    assert one == IngestAnswer(seqs=[(5, 5)], stored=[(5, 5)], dead_letters=[])

    body = batch(*(sample(node_id, seq) for seq in (1, 2, 3, 7)))
    first = node.post(body)
    again = node.post(body)  # the node never heard the first answer
    expected = IngestAnswer(seqs=[(1, 3), (7, 7)], stored=[(1, 3), (7, 7)], dead_letters=[])
    assert first == expected
    assert again == expected
    assert stored_seqs(database, node_id) == [1, 2, 3, 5, 7]
    assert dead_letters(database, node_id) == []


def test_bad_samples_are_dead_lettered_with_reasons_and_named(
    endpoint: HttpIngestProcess, database: Database, tenant: int
) -> None:
    node_id, secret = node_with_secret(database, tenant)
    broken = sample(node_id, 2)
    del broken["battery"]
    implausible = sample(node_id, 3, battery={"soc_percent": 150.0, "voltage": 52.0})
    foreign = sample("someone-else", 4)
    answer = client(endpoint, node_id, secret).post(
        batch(sample(node_id, 1), broken, implausible, foreign)
    )

    assert answer["seqs"] == [(1, 4)]
    assert answer["stored"] == [(1, 1)]
    reasons = {dead["seq"]: dead["reason"] for dead in answer["dead_letters"]}
    assert reasons == {2: "schema_violation", 3: "implausible_value", 4: "node_id_mismatch"}
    assert stored_seqs(database, node_id) == [1]
    metrics = scrape(endpoint.metrics_port)
    assert metrics["wattfleet_http_ingest_dead_letters_total{reason=node_id_mismatch}"] >= 1
    assert metrics["wattfleet_http_ingest_samples_written_total"] >= 1
    with database.connect() as conn:
        filed = conn.execute(
            "SELECT topic, reason FROM dead_letters WHERE node_id = %s ORDER BY reason",
            (node_id,),
        ).fetchall()
    topic = f"http:nodes/{node_id}/telemetry"
    assert filed == [
        (topic, "implausible_value"),
        (topic, "node_id_mismatch"),
        (topic, "schema_violation"),
    ]


def test_an_unreadable_body_is_dead_lettered_and_answered_422(
    endpoint: HttpIngestProcess, database: Database, tenant: int
) -> None:
    node_id, secret = node_with_secret(database, tenant)
    body = b'{"samples": [1, 2'
    status, answer, _ = raw_post(
        endpoint, ingest_path(node_id), body, signed(node_id, secret, body)
    )
    assert status == 422
    assert answer["seqs"] == []
    assert answer["stored"] == []
    assert [d["reason"] for d in answer["dead_letters"]] == ["invalid_json"]
    assert [row[0] for row in dead_letters(database, node_id)] == ["invalid_json"]


def test_requests_not_signed_by_the_node_are_refused(
    endpoint: HttpIngestProcess, database: Database, tenant: int
) -> None:
    node_id, secret = node_with_secret(database, tenant)
    other_id, other_secret = node_with_secret(database, tenant)
    body = json.dumps(sample(node_id, 1)).encode()
    path = ingest_path(node_id)

    refusals = {
        "wrong key": signed(node_id, b"not-the-secret", body),
        "another node's key": signed(other_id, other_secret, body),
        "expired": signed(node_id, secret, body, int(time.time()) - 3600),
        "from the future": signed(node_id, secret, body, int(time.time()) + 3600),
        "unsigned": {},
        "not a time": {**signed(node_id, secret, body), TIMESTAMP_HEADER: "soon"},
        "not ASCII": {**signed(node_id, secret, body), SIGNATURE_HEADER: "\u00e9" * 64},
    }
    for case, headers in refusals.items():
        status, answer, _ = raw_post(endpoint, path, body, headers)
        assert status == 401, case
        assert "detail" in answer, case
    tampered = signed(node_id, secret, body)
    status, _, _ = raw_post(endpoint, path, body.replace(b'"seq": 1', b'"seq": 2'), tampered)
    assert status == 401
    status, _, _ = raw_post(
        endpoint, "/nodes/no%20such/telemetry", body, signed(node_id, secret, body)
    )
    assert status == 404
    assert stored_seqs(database, node_id) == []
    assert (
        count_rows(database, "SELECT count(*) FROM dead_letters WHERE node_id = %s", (node_id,))
        == 0
    )
    assert scrape(endpoint.metrics_port)["wattfleet_http_ingest_requests_total{status=401}"] >= 8


def test_a_disabled_node_is_refused(
    endpoint: HttpIngestProcess, database: Database, tenant: int
) -> None:
    node_id, secret = node_with_secret(database, tenant, enabled=False)
    with pytest.raises(IngestError) as refused:
        client(endpoint, node_id, secret).post(json.dumps(sample(node_id, 1)).encode())
    assert refused.value.status_code == 403
    assert stored_seqs(database, node_id) == []


def test_an_oversized_body_is_refused_413(
    endpoint: HttpIngestProcess, database: Database, tenant: int
) -> None:
    node_id, secret = node_with_secret(database, tenant)
    body = batch(*(sample(node_id, seq) for seq in range(200)))
    assert len(body) > MAX_BODY
    with pytest.raises(IngestError) as refused:
        client(endpoint, node_id, secret).post(body)
    assert refused.value.status_code == 413
    assert stored_seqs(database, node_id) == []


def test_a_node_over_its_rate_is_told_when_to_retry(
    endpoint: HttpIngestProcess, database: Database, tenant: int
) -> None:
    node_id, secret = node_with_secret(database, tenant)
    other_id, other_secret = node_with_secret(database, tenant)
    node = client(endpoint, node_id, secret)
    allowed = int(RATE.split("/")[0])
    for seq in range(allowed):
        node.post(json.dumps(sample(node_id, seq)).encode())
    with pytest.raises(IngestError) as refused:
        node.post(json.dumps(sample(node_id, allowed)).encode())
    assert refused.value.status_code == 429
    assert refused.value.retry_after_s is not None
    assert 1 <= refused.value.retry_after_s <= 61
    assert stored_seqs(database, node_id) == list(range(allowed))
    # Another node's budget is its own.
    answer = client(endpoint, other_id, other_secret).post(json.dumps(sample(other_id, 1)).encode())
    assert answer["stored"] == [(1, 1)]


def test_a_database_away_is_a_503_and_the_retry_stores(database: Database, tenant: int) -> None:
    node_id, secret = node_with_secret(database, tenant)
    proxy, url = proxy_for_database(database.url)
    try:
        with http_ingest(database, database_url=url) as endpoint:
            node = client(endpoint, node_id, secret)
            body = json.dumps(sample(node_id, 1)).encode()
            proxy.cut()
            with pytest.raises(IngestError) as refused:
                node.post(body)
            assert refused.value.status_code == 503
            assert refused.value.retry_after_s is not None
            proxy.restore()
            answers = []
            refusals: list[int | None] = []

            def stored_after_retries() -> bool:
                try:
                    answers.append(node.post(body))
                except IngestError as exc:  # the pool reconnects on its own back-off
                    refusals.append(exc.status_code)
                    return False
                return True

            wait_for(stored_after_retries, 60, "the endpoint to store again")
            assert answers[-1]["stored"] == [(1, 1)]
            assert set(refusals) <= {503}
    finally:
        proxy.close()
    assert stored_seqs(database, node_id) == [1]


HOSTILE_BODIES = {
    "empty": b"",
    "deep nesting": b"[" * 50_000,
    "not UTF-8": b"\xff\xfe{}",
    "null": b"null",
    "empty batch": b'{"samples": []}',
    "lone surrogate": b'{"node_id": "\\ud800", "seq": 1}',
    "seq past bigint": b'{"seq": 99999999999999999999999}',
    "NaN": b'{"samples": [{"seq": 1, "battery": {"soc_percent": NaN}}]}',
}


def test_hostile_bodies_are_dead_lettered_never_a_server_error(
    endpoint: HttpIngestProcess, database: Database, tenant: int
) -> None:
    node_id, secret = node_with_secret(database, tenant)
    path = ingest_path(node_id)
    for case, body in HOSTILE_BODIES.items():
        status, answer, _ = raw_post(endpoint, path, body, signed(node_id, secret, body))
        assert status in (200, 422), case
        assert answer["stored"] == [], case
        assert answer["dead_letters"], case
    assert stored_seqs(database, node_id) == []
    assert len(dead_letters(database, node_id)) >= len(HOSTILE_BODIES)
