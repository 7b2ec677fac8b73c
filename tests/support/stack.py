"""`python -m tests.support.stack`: the hub on this machine, for trying it out.

Starts what exists so far, each as a real process on a free port: TimescaleDB (the
embedded test server unless WATTFLEET_DATABASE_URL names one), migrations, Mosquitto
with the repo's config, one collector, and simulated sites publishing telemetry with
their own broker credentials. Prints where to look and live ingest figures until
Ctrl-C (or --duration seconds), then stops everything.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import signal
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

from contract import topics
from tests.support.fleet import create_tenant, enroll, mqtt_client, scrape, unique
from tests.support.services import (
    Broker,
    database_from_env,
    free_port,
    migrate,
    service_env,
    start_module,
    stop_process,
    wait_for,
    wait_for_port,
)


def simulated_sample(node_id: str, seq: int, now: datetime, phase: float) -> dict[str, object]:
    """A plausible reading: PV on a sine over a 10-minute "day" so the demo moves."""
    sun = max(0.0, math.sin((time.time() / 600 + phase) * 2 * math.pi))
    solar = round(4000 * sun, 1)
    load = round(600 + 400 * math.sin(time.time() / 90 + phase), 1)
    battery = round(max(-2000.0, min(2000.0, load - solar)) * 0.5, 1)
    return {
        "node_id": node_id,
        "timestamp": now.isoformat(),
        "seq": seq,
        "battery": {"soc_percent": round(50 + 40 * sun, 1), "voltage": 52.0, "power_w": battery},
        "solar": {"power_w": solar},
        "grid": {
            "current_price": 0.45 + 0.3 * (1 - sun),
            "mode": "AUTO",
            "power_w": round(load - solar - battery, 1),
        },
        "load": {"power_w": load},
        "optimizer": {"latest_decision": "charge from PV" if battery < 0 else "discharge to load"},
    }


def run_site(
    broker: Broker,
    node_id: str,
    password: str,
    interval_s: float,
    stop: threading.Event,
    phase: float,
) -> None:
    client = mqtt_client(broker, node_id, password)
    client.publish(
        topics.status(node_id),
        json.dumps(
            {"state": "online", "ts": datetime.now(UTC).isoformat(), "agent_version": "demo"}
        ),
        qos=1,
        retain=True,
    )
    seq = 0
    while not stop.wait(interval_s):
        body = simulated_sample(node_id, seq, datetime.now(UTC), phase)
        client.publish(topics.telemetry(node_id), json.dumps(body), qos=1)
        seq += 1
    client.disconnect()
    client.loop_stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sites", type=int, default=5, help="simulated sites (default 5)")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between samples")
    parser.add_argument("--duration", type=float, default=0, help="stop after N s (0: Ctrl-C)")
    args = parser.parse_args()

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    workdir = Path(tempfile.mkdtemp(prefix="wattfleet-stack-"))
    workdir.chmod(0o755)
    db = database_from_env("WATTFLEET_DATABASE_URL")
    broker = Broker(workdir / "broker")
    collector = None
    try:
        migrate(db)
        broker.start()
        tenant = create_tenant(db, unique("demo"))
        sites = enroll(db, broker, tenant, count=args.sites)
        metrics_port = free_port()
        collector = start_module(
            "collector",
            service_env(
                **db.env(),
                WATTFLEET_MQTT_PORT=str(broker.port),
                WATTFLEET_MQTT_USERNAME="collector",
                WATTFLEET_MQTT_PASSWORD=broker.passwords["collector"],
                WATTFLEET_MQTT_CLIENT_ID="collector-demo",
                WATTFLEET_METRICS_PORT=str(metrics_port),
            ),
            workdir / "collector.log",
        )
        wait_for_port(metrics_port, 20, collector)
        threads = [
            threading.Thread(
                target=run_site,
                daemon=True,
                args=(broker, s.id, s.password, args.interval, stop, i / 7),
            )
            for i, s in enumerate(sites)
        ]
        for t in threads:
            t.start()
        print(
            f"""wattfleet stack is up
  database   {db.url}{"  (embedded TimescaleDB)" if db.embedded else ""}
  broker     mqtt://127.0.0.1:{broker.port}  (dev-only accounts, fresh each run)
             admin / {broker.passwords["admin"]}   collector / {broker.passwords["collector"]}
             site {sites[0].id} / {sites[0].password}
  collector  metrics http://127.0.0.1:{metrics_port}/metrics  log {workdir / "collector.log"}
  sites      {args.sites} simulated, one sample each every {args.interval:g} s
Ctrl-C stops everything.""",
            flush=True,
        )
        started = time.monotonic()
        last_written, last_t = 0.0, started
        while not stop.wait(5):
            m = scrape(metrics_port)
            written = m.get("wattfleet_collector_samples_written_total", 0.0)
            dead = sum(
                v for k, v in m.items() if k.startswith("wattfleet_collector_dead_letters_total")
            )
            now = time.monotonic()
            rate = (written - last_written) / (now - last_t)
            last_written, last_t = written, now
            queued = int(m.get("wattfleet_collector_queue_messages", 0))
            print(
                f"ingest: {int(written)} rows written, {rate:.1f} rows/s, "
                f"{int(dead)} dead letters, queue {queued}",
                flush=True,
            )
            if args.duration and now - started >= args.duration:
                break
        stop.set()
        wait_for(lambda: all(not t.is_alive() for t in threads), 10, "sites to stop")
    finally:
        stop.set()
        if collector is not None:
            stop_process(collector)
        broker.stop()
        db.stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
