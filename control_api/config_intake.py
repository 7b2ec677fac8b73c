"""Storing the config each node reports it runs (`nodes/{node_id}/config`, retained).

Called on the broker link's `config` worker thread (control_api/broker_link.py), never
on paho's network thread; the report is acknowledged to the broker once this returns,
that is once it is committed or deliberately dropped. Everything in it is untrusted:
the topic's node id is the only authority (the broker lets a node publish only on its
own topics), the config must name that node and be one the hub itself would push
(`node_config.validate_node_config`: the contract's NodeConfig, no secrets). A report
replaces the node's previous one. Dropped, logged and counted in
`wattfleet_api_config_reports_dropped_total{reason}`:

- `too_large`: more than MAX_REPORTED_CONFIG_BYTES, left unread;
- `malformed`: not a `ReportedConfig` (invalid JSON or UTF-8, NaN, too deep, wrong types);
- `invalid`: a config this hub's NodeConfig refuses (another node's id, a secret, a key
  or bound it does not know: an agent newer than the hub), the last accepted one kept;
- `unknown_node`: no such node (any more);
- `refused` (counted by the worker): the database refused it for good.

While the database is unavailable the report is retried later (`RetryLaterError`).

A stored report whose time zone or tariffs are not the hub's for the node's site gets
them pushed, in the report's transaction, audited as `push_site_settings` (no actor:
the hub's own), unless a push carrying them is on its way or ended
(control_api/site_push.py says when a node is skipped). That is how a new node gets
its zone and tariffs (it reports at its first connect), and how one that missed a push
(offline past the push's deadline, disabled meanwhile) catches up.
"""

from __future__ import annotations

import logging

from pydantic import ValidationError
from pydantic_core import from_json
from sqlalchemy import Connection, Engine

from contract.delivery_worker import RetryLaterError
from contract.node_config import MAX_REPORTED_CONFIG_BYTES, ReportedConfig
from control_api import audit, node_config, site_settings
from control_api.dispatcher import DATABASE_UNAVAILABLE
from control_api.errors import RefusedError
from control_api.metrics import ApiMetrics
from control_api.site_push import Pushes, SitePusher

log = logging.getLogger(__name__)


class ConfigIntake:
    def __init__(self, engine: Engine, metrics: ApiMetrics, pusher: SitePusher) -> None:
        self.engine = engine
        self.metrics = metrics
        self.pusher = pusher

    def handle_report(self, node_id: str, payload: bytes) -> None:
        """Stores one report from `nodes/{node_id}/config`, or drops it (logged,
        counted). Raises RetryLaterError when the database is unavailable; any other
        exception means the report can never be stored (drop it)."""
        if len(payload) > MAX_REPORTED_CONFIG_BYTES:
            size = f"{len(payload)} bytes, over {MAX_REPORTED_CONFIG_BYTES}"
            self._drop(node_id, "too_large", size)
            return
        try:
            report = ReportedConfig.model_validate(from_json(payload, allow_inf_nan=False))
        except ValueError as exc:  # ValidationError is one
            detail = exc.errors()[0]["msg"] if isinstance(exc, ValidationError) else str(exc)
            self._drop(node_id, "malformed", detail)
            return
        try:
            config = node_config.validate_node_config(node_id, report.config)
        except node_config.NodeConfigError as exc:
            self._drop(node_id, "invalid", str(exc))
            return
        try:
            with self.engine.begin() as conn:
                stored = node_config.store_report(conn, node_id, report, config)
                pushes = self._push_site_settings(conn, node_id) if stored else Pushes()
            if pushes.pushed:
                with self.engine.connect() as conn:
                    self.pusher.publish(conn, pushes)
        except DATABASE_UNAVAILABLE as exc:
            raise RetryLaterError(f"config report from {node_id} not stored: {exc}") from exc
        if not stored:
            self._drop(node_id, "unknown_node", "no such node")

    def _push_site_settings(self, conn: Connection, node_id: str) -> Pushes:
        """Stages and audits a push of the hub's zone and tariffs to the node, if the
        report lacks them (the report's transaction)."""
        site = site_settings.site(conn, node_id)
        try:
            pushes = self.pusher.stage(conn, [site])
        except RefusedError as exc:  # settings no node can hold: refused when they were set
            log.error("zone and tariffs of site %s not pushed: %s", node_id, exc)
            return Pushes()
        if pushes.pushed:
            command_id = pushes.pushed[0].command_id
            log.info("node %s reports another zone or tariffs: pushed %s", node_id, command_id)
            audit.append(
                conn,
                audit.AuditEntry(
                    action="push_site_settings",
                    outcome="ok",
                    tenant_id=site.tenant_id,
                    node_id=node_id,
                    params={"reason": "reported config differs", **pushes.audit()},
                ),
            )
        return pushes

    def _drop(self, node_id: str, reason: str, detail: str) -> None:
        self.metrics.config_reports_dropped_total.labels(reason).inc()
        log.warning("config report from %s dropped (%s): %s", node_id, reason, detail)
