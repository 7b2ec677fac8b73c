"""Posting alerts to Alertmanager's v2 API (`POST /api/v2/alerts`)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import datetime
from typing import Any


class AlertmanagerError(Exception):
    """Alertmanager did not take the alerts."""


@dataclass(frozen=True)
class Alert:
    labels: dict[str, str]
    annotations: dict[str, str]
    starts_at: datetime
    # In the future while firing (Alertmanager resolves it by itself if we stop
    # re-sending); now or in the past to resolve it.
    ends_at: datetime

    def body(self) -> dict[str, Any]:
        return {
            "labels": self.labels,
            "annotations": self.annotations,
            "startsAt": self.starts_at.isoformat(),
            "endsAt": self.ends_at.isoformat(),
        }


def post_alerts(base_url: str, alerts: list[Alert], timeout_s: float = 5.0) -> None:
    """Sends the alerts in one request; raises AlertmanagerError when not accepted."""
    # The URL is a setting validated as http(s).
    request = urllib.request.Request(  # noqa: S310
        base_url.rstrip("/") + "/api/v2/alerts",
        data=json.dumps([a.body() for a in alerts]).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:  # noqa: S310
            response.read()
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode(errors="replace")[:500]
        raise AlertmanagerError(f"{base_url}: {exc}: {detail}") from exc
    except (urllib.error.URLError, OSError) as exc:
        raise AlertmanagerError(f"{base_url}: {exc}") from exc
