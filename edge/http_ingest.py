"""The agent's HTTPS client for the hub's telemetry endpoint (contract/http_ingest.py):
posts a signed body and returns the hub's answer, or raises saying why there is none.

Standard library only (urllib, ssl): a Pi's base install has no HTTP client package.
"""

from __future__ import annotations

import json
import ssl
import time
import urllib.error
import urllib.request
from http.client import HTTPException
from typing import Any

from pydantic import ValidationError

from contract.http_ingest import (
    INGEST_ANSWER,
    METHOD,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    IngestAnswer,
    ingest_path,
    signature,
)

# An answer names at most a batch's seqs and dead letters: far below this.
MAX_ANSWER_BYTES = 4 * 1_048_576


class IngestError(Exception):
    """No answer to act on: the hub could not be reached, or refused the request
    (`status_code`, with `retry_after_s` when it said when to try again)."""

    def __init__(
        self, message: str, status_code: int | None = None, retry_after_s: float | None = None
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.retry_after_s = retry_after_s


class HttpIngestClient:
    def __init__(
        self,
        url: str,
        node_id: str,
        secret: bytes,
        ca_file: str | None = None,
        timeout_s: float = 30.0,
    ) -> None:
        """`url`: the endpoint's base (https://hub:8443); the agent posts to its
        /nodes/{node_id}/telemetry. `ca_file`: trust this CA bundle, not the system's."""
        self.path = ingest_path(node_id)
        self.url = url.rstrip("/") + self.path
        self.secret = secret
        self.timeout_s = timeout_s
        self.context = ssl.create_default_context(cafile=ca_file)

    def post(self, body: bytes) -> IngestAnswer:
        """Sends one sample or batch; the hub's answer once it committed (200, or 422 for
        a body it filed whole as a dead letter). Raises IngestError otherwise."""
        timestamp = str(int(time.time()))
        request = urllib.request.Request(  # noqa: S310 - https only (the config says)
            self.url,
            data=body,
            method=METHOD,
            headers={
                "Content-Type": "application/json",
                TIMESTAMP_HEADER: timestamp,
                SIGNATURE_HEADER: signature(self.secret, METHOD, self.path, timestamp, body),
            },
        )
        try:
            with urllib.request.urlopen(  # noqa: S310
                request, timeout=self.timeout_s, context=self.context
            ) as response:
                return _answer(response.read(MAX_ANSWER_BYTES + 1))
        except urllib.error.HTTPError as exc:
            with exc:
                if exc.code == 422:
                    return _answer(exc.read(MAX_ANSWER_BYTES + 1))
                raise IngestError(
                    f"hub refused telemetry: {exc.code} {_detail(exc.read(4096))}",
                    exc.code,
                    _retry_after(exc.headers.get("Retry-After")),
                ) from None
        except (OSError, HTTPException) as exc:  # URLError, TLS and socket errors included
            raise IngestError(f"ingest endpoint unreachable: {exc}") from exc


def _answer(raw: bytes) -> IngestAnswer:
    if len(raw) > MAX_ANSWER_BYTES:
        raise IngestError("the hub's answer is too large")
    try:
        return INGEST_ANSWER.validate_json(raw)
    except ValidationError as exc:
        error = exc.errors(include_url=False, include_input=False)[0]
        raise IngestError(f"malformed answer from the hub: {error['msg']}") from None


def _detail(raw: bytes) -> str:
    try:
        body: Any = json.loads(raw)
    except ValueError:
        return "(no detail)"
    detail = body.get("detail") if isinstance(body, dict) else None
    return str(detail)[:200] if detail is not None else "(no detail)"


def _retry_after(value: str | None) -> float | None:
    try:
        return max(0.0, min(float(value), 3600.0)) if value is not None else None
    except ValueError:
        return None
