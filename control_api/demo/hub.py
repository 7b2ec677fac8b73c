"""The demo hub's run: starts every service in order, lists where everything is, then
prints ingest figures and what happens to its processes until Ctrl-C, SIGTERM or the
duration; stops everything in reverse order and keeps the logs."""

from __future__ import annotations

import secrets
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from types import FrameType
from typing import Any

from control_api.demo.broker import MOSQUITTO_MISSING, Broker, dynsec_plugin
from control_api.demo.database import (
    embedded_missing,
    migrate,
    open_database,
    require_timescaledb,
)
from control_api.demo.processes import (
    DemoError,
    Supervised,
    free_port,
    start_module,
    wait_for_port,
)
from control_api.demo.services import (
    api_env,
    api_settings,
    collector_env,
    create_admin,
    scrape,
    start_api,
)
from control_api.demo.sites import (
    AdminClient,
    EnrolledNode,
    enroll_sites,
    start_agent,
    start_simulator,
    write_agent_config,
)

ADMIN_EMAIL = "admin@example.com"
FIGURES_EVERY_S = 5.0
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@dataclass(frozen=True)
class DemoOptions:
    sites: int = 5
    interval_s: float = 1.0  # between an agent's samples
    duration_s: float = 0  # 0: until Ctrl-C or SIGTERM
    database_url: str | None = None  # None: the embedded TimescaleDB


def say(line: str) -> None:
    """One line to stdout, written whole (the watcher threads print too)."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _interrupt(_signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def run(options: DemoOptions) -> int:
    """Runs the demo until stopped; returns the exit status (1 if it could not start).
    The logs stay in a new folder under the temporary directory, printed at the end."""
    missing = _missing_requirements(options)
    if missing:
        print(f"wattfleet demo: {'; '.join(missing)}", file=sys.stderr)
        return 1
    workdir = Path(tempfile.mkdtemp(prefix="wattfleet-demo-"))
    workdir.chmod(0o755)  # mosquitto drops to its own user and reads its files below
    # SIGTERM too interrupts wherever the start is, so what started is stopped.
    previous = {sig: signal.signal(sig, _interrupt) for sig in STOP_SIGNALS}
    try:
        with ExitStack() as stack:
            try:
                _serve(options, workdir, stack)
                status = 0
            except KeyboardInterrupt:
                status = 0
            except (DemoError, TimeoutError) as exc:
                print(f"wattfleet demo: {exc}", file=sys.stderr, flush=True)
                status = 1
            finally:
                # Stopping the services in order is not interrupted by a second Ctrl-C.
                for sig in STOP_SIGNALS:
                    signal.signal(sig, signal.SIG_IGN)
                say("stopping...")
        return status
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        say(f"logs kept in {workdir}")


def _serve(options: DemoOptions, workdir: Path, stack: ExitStack) -> None:
    def watch(
        name: str,
        proc: subprocess.Popen[Any],
        log_path: Path,
        restart: Callable[[], subprocess.Popen[Any]] | None = None,
    ) -> Supervised:
        supervised = Supervised(name, proc, log_path, say, restart)
        stack.callback(supervised.stop)
        return supervised

    say("starting TimescaleDB, Mosquitto, the collector and the control API...")
    db_log = workdir / "timescaledb.log"
    db = open_database(options.database_url, db_log)
    if db.proc is not None:
        watch("embedded TimescaleDB", db.proc, db_log)
    else:
        require_timescaledb(db)
    migrate(db)
    broker = Broker(workdir / "broker").start()
    assert broker.proc is not None
    watch("Mosquitto", broker.proc, broker.log_path)
    metrics_port = free_port()
    collector_log = workdir / "collector.log"
    collector = start_module(
        "collector", collector_env(db, broker, "collector-demo", metrics_port), collector_log
    )
    watch("collector", collector, collector_log)
    wait_for_port(metrics_port, 20, collector)
    api_port, api_log = free_port(), workdir / "api.log"
    env = api_env(api_settings(db, broker, api_port=api_port))
    watch("control API", start_api(env, api_port, api_log), api_log)
    api_url = f"http://127.0.0.1:{api_port}"
    admin_password = secrets.token_urlsafe(12)
    create_admin(env, ADMIN_EMAIL, admin_password)

    say(f"enrolling {options.sites} simulated sites through the control API...")
    nodes = enroll_sites(AdminClient(api_port, ADMIN_EMAIL, admin_password), options.sites)
    site_lines = [
        _start_site(seed, node, broker.port, workdir, options.interval_s, watch)
        for seed, node in enumerate(nodes)
    ]
    embedded = "  (embedded TimescaleDB)" if db.embedded else ""
    say(
        f"""wattfleet demo is up
  database   {db.url}{embedded}
  broker     mqtt://127.0.0.1:{broker.port}  (dev-only accounts, fresh each run)
             admin / {broker.passwords["admin"]}   collector / {broker.passwords["collector"]}
  collector  metrics http://127.0.0.1:{metrics_port}/metrics
  API        {api_url}/docs  admin {ADMIN_EMAIL} / {admin_password}
  sites      {options.sites} simulated inverters, each read by an edge agent every \
{options.interval_s:g} s:
{chr(10).join(site_lines)}
  logs       {workdir}  (kept after stop)
Ctrl-C stops everything."""
    )
    _print_ingest(metrics_port, options.duration_s)


def _missing_requirements(options: DemoOptions) -> list[str]:
    """What this machine lacks for the demo, as messages for the user."""
    missing = [] if dynsec_plugin() else [MOSQUITTO_MISSING]
    if options.database_url is None and (problem := embedded_missing()):
        missing.append(problem)
    return missing


def _start_site(
    seed: int,
    node: EnrolledNode,
    broker_port: int,
    workdir: Path,
    interval_s: float,
    watch: Callable[..., Supervised],
) -> str:
    """Starts the node's simulator and agent (started again when it asks); returns the
    site's line in the listing: node id, status page, broker account."""
    site_dir = workdir / node.node_id
    site_dir.mkdir()
    coordinator_port = free_port()
    simulator, modbus_port = start_simulator(seed, site_dir / "simulator.log", coordinator_port)
    watch(f"{node.node_id} simulator", simulator, site_dir / "simulator.log")
    config, agent_log = site_dir / "config.yaml", site_dir / "agent.log"
    status_port = write_agent_config(
        config, node, broker_port, modbus_port, interval_s, coordinator_port
    )
    watch(
        f"{node.node_id} agent",
        start_agent(config, agent_log),
        agent_log,
        restart=partial(start_agent, config, agent_log),
    )
    return (
        f"             {node.node_id}  status http://127.0.0.1:{status_port}/"
        f"  broker account {node.node_id} / {node.mqtt_password}"
    )


def _print_ingest(metrics_port: int, duration_s: float) -> None:
    """Every FIGURES_EVERY_S: rows written, their rate, dead letters, queue depth; until
    `duration_s` has passed (0: forever)."""
    started = last_t = time.monotonic()
    last_written = 0.0
    while True:
        time.sleep(FIGURES_EVERY_S)
        now = time.monotonic()
        try:
            m = scrape(metrics_port)
        except (urllib.error.URLError, OSError) as exc:
            say(f"ingest: no figures, the collector's metrics do not answer ({exc})")
        else:
            written = m.get("wattfleet_collector_samples_written_total", 0.0)
            dead = sum(
                v for k, v in m.items() if k.startswith("wattfleet_collector_dead_letters_total")
            )
            rate = (written - last_written) / (now - last_t)
            last_written, last_t = written, now
            queued = int(m.get("wattfleet_collector_queue_messages", 0))
            say(
                f"ingest: {int(written)} rows written, {rate:.1f} rows/s, "
                f"{int(dead)} dead letters, queue {queued}"
            )
        if duration_s and now - started >= duration_s:
            return
