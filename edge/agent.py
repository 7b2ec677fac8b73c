"""The agent loop: poll the inverter, buffer each sample, publish, replay the backlog."""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry
from pydantic import ValidationError
from pymodbus.client import ModbusSerialClient, ModbusTcpClient

from contract.failure_log import FailureLog
from contract.fields import GRID_PRICE, LOAD_POWER_W, NODE_ID, TS, wire_body
from contract.inventory import NodeInventory
from contract.node_config import ReportedConfig, effective_config
from contract.telemetry import TELEMETRY_SAMPLE
from edge.buffer import SampleBuffer
from edge.commands import CommandFailedError, CommandHandler, LogRing, SeenCommands
from edge.config import EdgeSettings
from edge.config_push import ConfigPush
from edge.coordinator import Coordination, CoordinatorServer, decision_json
from edge.energy_meter import EnergyMeter
from edge.energy_today import EnergyToday
from edge.http_fallback import HttpFallback
from edge.inventory import agent_inventory, read_inventory
from edge.inverter import InverterError, Reading, SunSpecDevice
from edge.prices import Prices, SitePrices
from edge.publisher import Publisher
from edge.registers import sunspec_map
from edge.safety_lock import SafetyLock
from edge.self_update import SelfUpdate, installed_version
from edge.status_page import EdgeMetrics, StatusServer
from edge.strategy import Strategy
from edge.tunnel import Tunnel, TunnelError

log = logging.getLogger(__name__)

PRUNE_EVERY_S = 600.0


def utc_now() -> datetime:
    return datetime.now(UTC)


def modbus_client(settings: EdgeSettings) -> ModbusTcpClient | ModbusSerialClient:
    if settings.modbus_transport == "rtu":
        return ModbusSerialClient(
            settings.modbus_serial_port,
            baudrate=settings.modbus_baudrate,
            timeout=settings.modbus_timeout_s,
            retries=1,
        )
    return ModbusTcpClient(
        settings.modbus_host,
        port=settings.modbus_port,
        timeout=settings.modbus_timeout_s,
        retries=1,
    )


def sample_body(
    reading: Reading,
    node_id: str,
    now: datetime,
    price_per_kwh: float,
    parts: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The telemetry body of a reading (without seq, not validated), nested as the field
    table (contract/fields.py) says; `parts`: more values by column (the energy part, the
    coordinator's decision)."""
    values = dataclasses.asdict(reading)  # keyed by column, as the field table is
    values.update(parts or {})
    values[NODE_ID.column] = node_id
    values[TS.column] = now.isoformat()
    values[GRID_PRICE.column] = price_per_kwh
    if reading.load_power_w is not None:
        # AC plus grid power dips below zero by metering noise; a load never does.
        values[LOAD_POWER_W.column] = max(0.0, reading.load_power_w)
    return wire_body(values)


def price_json(prices: Prices) -> dict[str, Any]:
    return {
        "import_per_kwh": prices.import_per_kwh,
        "export_per_kwh": prices.export_per_kwh,
        "currency": prices.currency,
        "period": prices.period,
    }


class Agent:
    def __init__(
        self,
        settings: EdgeSettings,
        clock: Callable[[], datetime] = utc_now,
        config_path: Path | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        state_dir: Path | None = None,
    ) -> None:
        """`clock` is the wall clock samples are stamped with; `monotonic` times the
        resends and the replay rate. `state_dir` holds the pending push and update
        markers (by default the config file's folder, else the buffer's)."""
        self.settings = settings
        self.clock = clock
        self.monotonic = monotonic
        self.metrics = EdgeMetrics(CollectorRegistry())
        self.buffer = SampleBuffer(
            settings.buffer_path, settings.buffer_max_samples, settings.buffer_max_age
        )
        self.device = SunSpecDevice(
            modbus_client(settings),
            settings.modbus_unit_id,
            sunspec_map(),
            frame_gap_s=settings.modbus_frame_gap_s,
        )
        self.publisher = Publisher(
            settings,
            self.buffer,
            installed_version(),
            clock,
            self._handle_command,
            self.metrics,
            monotonic,
        )
        self.http_fallback = (
            HttpFallback(settings, self.buffer, self.publisher, self.metrics, monotonic)
            if settings.ingest_url is not None
            else None
        )
        self._device_failures = FailureLog(log)
        self.last_reading: Reading | None = None
        self.last_reading_at: datetime | None = None
        self.prices = SitePrices(settings)
        # A reading counts for up to three poll intervals: one slow or failed poll still
        # counts, a longer outage does not.
        max_gap = 3 * timedelta(seconds=settings.poll_interval_s)
        self.energy_today = EnergyToday(max_gap, self.prices.zone)
        self.energy_meter = EnergyMeter(
            max_gap, self.buffer.meter_point(), clock(), settings.buffer_max_age
        )
        self.coordination = Coordination()
        self.coordinator_server = (
            CoordinatorServer(
                settings.coordinator_port,
                self.coordination,
                self.coordinator_context,
                clock,
                settings.strategy_enabled,
                lambda: self.safety_lock.holder(),
            )
            if settings.coordinator_port is not None
            else None
        )
        self.log_ring = LogRing()
        logging.getLogger().addHandler(self.log_ring)
        if state_dir is None:
            state_dir = config_path.parent if config_path else settings.buffer_path.parent
        self.safety_lock = SafetyLock(state_dir, settings.safety_lock, clock)
        # The lock's change count as last published: a change is published at once.
        self._lock_reported: int | None = None
        self.strategy = Strategy(state_dir, settings.strategy_enabled, settings.strategy)
        self.config_push = ConfigPush(config_path, state_dir) if config_path else None
        # Only a push staged before this process started is this process's to confirm:
        # one staged now is confirmed by the agent it restarts into.
        self._push_to_follow = self.config_push.pending() if self.config_push else None
        self.self_update = SelfUpdate(
            state_dir,
            settings.update_index_url,
            settings.update_find_links,
            settings.update_timeout_s,
        )
        self._update_to_follow = self.self_update.pending()
        self.tunnel = self._tunnel(settings, state_dir, clock)
        # The tunnel's status as last published: a change is published at once.
        self._tunnel_reported: dict[str, Any] | None = None
        self.commands_handler = CommandHandler(
            settings.node_id,
            settings.node_secret.get_secret_value().encode(),
            self.device,
            SeenCommands(settings.buffer_path.with_name("commands.sqlite3")),
            self.log_ring,
            self.publisher.send,
            clock,
            self._request_restart,
            self.safety_lock,
            self.config_push,
            self.self_update,
            settings.config_apply_deadline_s,
            self.tunnel,
        )
        self.restart_requested = False
        self._stop = threading.Event()
        self.metrics.buffer_dropped_total.inc(self.buffer.dropped_total())
        self.status_server = StatusServer(
            settings.status_host,
            settings.status_port,
            self.snapshot,
            self.metrics.registry,
            self.safety_lock,
        )
        self.last_seq: int | None = None
        # (connection, version, locked) the config was last reported for.
        self._config_reported: tuple[int, int | None, bool] | None = None
        self._agent_inventory = agent_inventory(self.publisher.agent_version)
        self.inventory: NodeInventory | None = None
        # When the inventory was last read (monotonic; None: read it at the next chance),
        # and the (connection, content) it was last published for.
        self._inventory_read_at: float | None = None
        self._inventory_reported: tuple[int, dict[str, Any]] | None = None

    @staticmethod
    def _tunnel(
        settings: EdgeSettings, state_dir: Path, clock: Callable[[], datetime]
    ) -> Tunnel | None:
        """The remote debug tunnel when the site enabled it; None (OPEN_TUNNEL refused)
        otherwise, and when its key cannot be made: monitoring goes on without it."""
        if not settings.tunnel_enabled:
            return None
        try:
            return Tunnel(settings.node_id, state_dir, settings.tunnel_local_port, clock)
        except TunnelError as exc:
            log.error("remote access unavailable: %s", exc)
            return None

    @property
    def device_available(self) -> bool:
        """False from the inverter's first failed poll until it answers again."""
        return not self._device_failures.failing

    def snapshot(self) -> dict[str, Any]:
        """What the local status page shows."""
        r = self.last_reading
        return {
            "node_id": self.settings.node_id,
            "agent_version": self.publisher.agent_version,
            "clock": self.clock().isoformat(),
            "broker_connected": self.publisher.connected.is_set(),
            "http_fallback_active": self.http_fallback is not None and self.http_fallback.active,
            "device_available": self.device_available,
            "buffer_depth": self.buffer.depth(),
            "oldest_unconfirmed_age_s": self.oldest_unconfirmed_age_s(),
            "buffer_dropped_total": self.buffer.dropped_total(),
            "last_seq": self.last_seq,
            "soc_percent": r.soc_percent if r else None,
            "solar_power_w": r.solar_power_w if r else None,
            "battery_power_w": r.battery_power_w if r else None,
            "grid_power_w": r.grid_power_w if r else None,
            "load_power_w": r.load_power_w if r else None,
            "last_reading_at": self.last_reading_at.isoformat() if self.last_reading_at else None,
            "poll_interval_s": self.settings.poll_interval_s,
            "timezone": self.settings.timezone,
            **self.energy_today.snapshot(),
            "prices_now": price_json(self.prices.at(self.clock())),
            "commands": list(self.commands_handler.last_results),
            "tunnel": self.tunnel.snapshot() if self.tunnel else None,
            "inventory": self.inventory.content() if self.inventory else None,
            "safety_lock": self.safety_lock.status(),
            "strategy": self.strategy.status(),
        }

    def _follow_staged_changes(self) -> None:
        """Confirms, rolls back or reports a CONFIG_PUSH or SELF_UPDATE that restarted
        this agent."""
        push = self._push_to_follow
        if push is not None and self.config_push is not None:
            version = push.get("version")
            self._push_to_follow = self._follow(
                self.config_push,
                push,
                f"config version {version} applied",
                f"with config version {version}",
            )
        update = self._update_to_follow
        if update is not None:
            running = self.publisher.agent_version
            self._update_to_follow = self._follow(
                self.self_update,
                update,
                f"updated from {update.get('from')} to {update.get('to')}",
                f"with version {update.get('to')}",
                failure=None if running == update.get("to") else f"still running {running}",
            )

    def _follow(
        self,
        change: ConfigPush | SelfUpdate,
        pending: dict[str, Any],
        applied: str,
        context: str,
        failure: str | None = None,
    ) -> dict[str, Any] | None:
        """One step of following a staged change; the marker while still undecided."""
        connected = self.publisher.connected.is_set()
        if pending["state"] == "rolled_back":
            if not connected:
                return pending
            self.commands_handler.ack(pending["id"], "failed", f"rolled back: {pending['reason']}")
            change.finish()
            return None
        if failure is None and connected and self.device_available and self.last_reading:
            self.commands_handler.ack(pending["id"], "succeeded", applied)
            change.confirm()
            return None
        if failure is None and self.clock() <= datetime.fromisoformat(pending["deadline"]):
            return pending
        reason = failure or (
            "inverter unreachable" if not self.device_available else "broker unreachable"
        )
        log.error("staged change %s failed (%s %s): rolling back", pending["id"], reason, context)
        change.roll_back(f"{reason} {context}")
        self._request_restart()
        return None

    def report_config(self) -> None:
        """Publishes the config this agent runs (retained, secrets left out) once on
        each connection, and again once a push it runs is confirmed (a new version)."""
        version = self.config_push.applied_version if self.config_push else None
        # Again when the lock is lifted: the hub holds back its settings push from a
        # locked site until the site next reports its config (control_api/site_push.py).
        reported = (self.publisher.connections, version, self.safety_lock.locked)
        if not self.publisher.connected.is_set() or reported == self._config_reported:
            return
        self._config_reported = reported
        report = ReportedConfig(
            version=version, ts=self.clock(), config=effective_config(self.settings)
        )
        self.publisher.send("config", report.model_dump(mode="json"), retain=True)

    def report_inventory(self) -> None:
        """Publishes the device inventory (retained) once on each connection and again
        whenever it changes. It is read again every `inventory_interval_s`, and at once
        after the inverter comes back from an outage (a firmware update restarts it);
        nothing is sent before the inverter first answers. Read while the broker is
        away too: the status page shows it."""
        if not self.device_available:
            return
        now = self.monotonic()
        read_at = self._inventory_read_at
        if read_at is None or now - read_at >= self.settings.inventory_interval_s:
            self._inventory_read_at = now
            try:
                self.inventory = read_inventory(
                    self.device, self.settings.node_id, self.clock(), self._agent_inventory
                )
            except (InverterError, ValidationError) as exc:
                log.warning("inventory not read: %s", exc)
                return
        if self.inventory is None or not self.publisher.connected.is_set():
            return
        reported = (self.publisher.connections, self.inventory.content())
        if reported == self._inventory_reported:
            return
        self._inventory_reported = reported
        self.publisher.send("inventory", self.inventory.model_dump(mode="json"), retain=True)

    def oldest_unconfirmed_age_s(self) -> int | None:
        """Seconds since the oldest buffered sample (not yet confirmed by the hub) was
        taken; None when the buffer is empty."""
        oldest = self.buffer.oldest_ts()
        if oldest is None:
            return None
        return max(0, int((self.clock() - oldest).total_seconds()))

    def heartbeat(self) -> None:
        """The retained online status with the buffer's depth, oldest sample's age, the
        tunnel's state, the safety lock and the strategy."""
        tunnel = self.tunnel.status() if self.tunnel else None
        lock_changes = self.safety_lock.changes
        self.publisher.publish_status(
            self.buffer.depth(),
            self.oldest_unconfirmed_age_s(),
            tunnel=tunnel,
            safety_lock=self.safety_lock.status(),
            strategy=self.strategy.status(),
        )
        if self.publisher.connected.is_set():
            self._tunnel_reported = tunnel
            self._lock_reported = lock_changes

    def _lock_changed(self) -> bool:
        """True when the lock changed since it was last published and it can be now."""
        return self.publisher.connected.is_set() and self.safety_lock.changes != self._lock_reported

    def _return_to_self_consumption(self) -> None:
        """Once the strategy is switched off: the inverter back in its own mode."""
        try:
            self.commands_handler.self_consumption()
        except (CommandFailedError, InverterError) as exc:
            log.warning("dynamic strategy off, self-consumption not set yet: %s", exc)
            return
        self.strategy.returned_to_self_consumption()

    def _close_tunnel_while_locked(self) -> None:
        """A shell reached through the tunnel is on the Pi itself, where it could lift
        the site's own lock (the status page's action): no tunnel stays open while the
        site is locked, whoever locked it (OPEN_TUNNEL is refused then)."""
        if self.tunnel is not None and self.safety_lock.locked:
            self.tunnel.close("the site is safety-locked")

    def _tunnel_changed(self) -> bool:
        """True when the tunnel changed since it was last published and it can be now."""
        return (
            self.tunnel is not None
            and self.publisher.connected.is_set()
            and self.tunnel.status() != self._tunnel_reported
        )

    def _update_metrics(self) -> None:
        m = self.metrics
        m.buffer_depth.set(self.buffer.depth())
        m.oldest_unconfirmed_age.set(self.oldest_unconfirmed_age_s() or 0)
        m.broker_connected.set(int(self.publisher.connected.is_set()))
        m.device_available.set(int(self.device_available))
        if self.last_seq is not None:
            m.last_seq.set(self.last_seq)

    def _handle_command(self, payload: bytes) -> None:
        """On the command worker's thread. Never raises: a command that crashed is still
        acknowledged to the broker, not delivered again and again."""
        try:
            self.commands_handler.handle(payload)
        except Exception:  # the command thread must outlive any one command
            log.exception("command handling failed")

    def _request_restart(self) -> None:
        """Stops the agent and its command worker: commands queued behind this one stay
        unacknowledged, and the broker delivers them to the restarted agent."""
        self.restart_requested = True
        self._stop.set()
        self.publisher.commands.close()

    def coordinator_context(self) -> dict[str, Any]:
        """What `GET /context` answers the site's coordinator (docs/edge.md)."""
        now = self.clock()
        r, at = self.last_reading, self.last_reading_at
        return {
            "node_id": self.settings.node_id,
            "clock": now.isoformat(),
            "timezone": self.settings.timezone,
            "local_time": now.astimezone(self.prices.zone).isoformat(),
            # Off: a coordinator must leave the battery to the inverter's own
            # self-consumption (any other decision is refused).
            "strategy": self.strategy.status(),
            "safety_lock": self.safety_lock.status(),
            "prices_now": price_json(self.prices.at(now)),
            "prices_today": [
                {"start": start.isoformat(), **price_json(prices)}
                for start, prices in self.prices.hours_of_day(now)
            ],
            "tariffs": [v.model_dump(mode="json") for v in self.settings.tariffs],
            "reading": None
            if r is None or at is None
            else {
                "at": at.isoformat(),
                "soc_percent": r.soc_percent,
                "solar_power_w": r.solar_power_w,
                "battery_power_w": r.battery_power_w,
                "grid_power_w": r.grid_power_w,
                "load_power_w": r.load_power_w,
                "grid_mode": r.grid_mode,
            },
            "decision": decision_json(self.coordination.in_force(now)),
        }

    def sample(
        self, reading: Reading, now: datetime, energy: Mapping[str, Any] | None = None
    ) -> dict[str, Any] | None:
        """The contract's telemetry body (without seq), or None if the reading is
        unusable. `energy`: its energy part, keyed by column (edge/energy_meter.py)."""
        parts = {**(energy or {}), **self.coordination.optimizer_values(now)}
        price = self.prices.at(now).import_per_kwh
        body = sample_body(reading, self.settings.node_id, now, price, parts)
        try:
            TELEMETRY_SAMPLE.validate_python({**body, "seq": 0})
        except ValidationError as exc:
            log.warning("unusable reading, not buffered: %s", exc.errors()[0]["msg"])
            return None
        return body

    def prune_buffer(self) -> int:
        """Applies the buffer's age and size bounds; what they drop is logged and counted.
        Returns how many samples went."""
        dropped = self.buffer.prune(self.clock())
        if dropped:
            log.warning("buffer full: dropped %d oldest samples", dropped)
            self.metrics.buffer_dropped_total.inc(dropped)
        return dropped

    def poll(self) -> int | None:
        """Reads the device once and buffers and publishes the sample; its seq or None."""
        now = self.clock()
        try:
            reading = self.device.reading()
        except InverterError as exc:
            self._device_failures.failed("inverter unavailable: %s", exc)
            self.device.models.clear()
            return None
        if self._device_failures.recover():
            log.info("inverter available again")
            self._inventory_read_at = None
        self.last_reading = reading
        self.last_reading_at = now
        energy, point = self.energy_meter.measure(reading, now)
        body = self.sample(reading, now, energy)
        if body is None:
            return None
        self.energy_today.add(reading, now)
        seq, stored = self.buffer.append(body, now, point.to_json())
        self.energy_meter.advance(point)
        self.last_seq = seq
        self.publisher.publish_live(seq, stored)
        if self.strategy.owes_self_consumption:
            self._return_to_self_consumption()
        return seq

    def run(self, stop: threading.Event) -> None:
        """Polls on its interval until `stop` (or a RESTART_AGENT command), publishing and
        replaying in between."""
        self._stop = stop
        self.status_server.start()
        if self.coordinator_server is not None:
            self.coordinator_server.start()
        self.publisher.start()
        interval = self.settings.poll_interval_s
        next_poll = next_heartbeat = next_prune = time.monotonic()
        try:
            while not stop.is_set():
                now = time.monotonic()
                if now >= next_prune:
                    self.prune_buffer()
                    next_prune = now + PRUNE_EVERY_S
                if now >= next_poll:
                    self.poll()
                    self._update_metrics()
                    self._follow_staged_changes()
                    next_poll = max(next_poll + interval, now)
                self._close_tunnel_while_locked()
                if now >= next_heartbeat or self._tunnel_changed() or self._lock_changed():
                    self.heartbeat()
                    next_heartbeat = now + self.settings.heartbeat_interval_s
                self.report_config()
                self.report_inventory()
                backlog = self.publisher.pump()
                if self.http_fallback is not None:
                    backlog = self.http_fallback.pump() or backlog
                stop.wait(0.01 if backlog else min(0.2, max(0.0, next_poll - time.monotonic())))
        finally:
            stop.set()
            if self.tunnel is not None:
                self.tunnel.close("the agent stopped")
            self.status_server.stop()
            if self.coordinator_server is not None:
                self.coordinator_server.stop()
            if self.http_fallback is not None:
                self.http_fallback.close()
            self.publisher.stop()
            self.device.client.close()  # type: ignore[no-untyped-call]
            self.buffer.close()
