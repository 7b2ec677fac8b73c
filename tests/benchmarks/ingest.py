"""How fast the collector drains queued telemetry, against two reference subscribers.

    .venv/bin/python -m tests.benchmarks.ingest [--messages 50000] [--nodes 50]

For each of three subscribers, on its own fresh broker: start it, pause it (SIGSTOP),
queue N QoS 1 messages from many node topics (one `mosquitto_pub -l` per node, with
that node's credentials), resume it (SIGCONT), and time until all N are done:
- collector: `python -m collector` (its intake process is the one paused; its batch
  writer process has nothing to do meanwhile), done when N rows are committed; each
  node's own account listens for its ingest confirmations meanwhile, to count the
  traffic they add (messages and bytes a sample) and check they name all N samples;
- bare: a paho subscriber that only parses the JSON (the ceiling);
- naive: a paho subscriber that INSERTs each message in its own transaction.
Prints msg/s for each and the ratios. The database is the embedded TimescaleDB unless
WATTFLEET_DATABASE_URL names one.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from contract import topics
from contract.confirmations import INGEST_CONFIRMATION
from tests.support.fleet import count_rows, create_tenant, enroll, mqtt_client, sample, scrape
from tests.support.services import (
    REPO,
    Broker,
    Database,
    collector_env,
    collector_writer_pid,
    database_from_env,
    free_port,
    migrate,
    service_env,
    start_module,
    stop_process,
    wait_for,
    wait_for_port,
)

SUBSCRIBER = """
import json, sys, time, psycopg
from paho.mqtt.client import Client
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.properties import Properties
from paho.mqtt.packettypes import PacketTypes

mode, port, password, expected, db_url, prepare = sys.argv[1:7]
expected = int(expected)
conn = None
if mode == "naive":
    threshold = None if prepare == "none" else 5
    conn = psycopg.connect(db_url, autocommit=True, prepare_threshold=threshold)
seen = 0
def on_message(client, userdata, msg):
    global seen
    body = json.loads(msg.payload)
    if conn is not None:
        conn.execute(
            "INSERT INTO telemetry (ts, node_id, tenant_id, seq, soc_percent, solar_w,"
            " grid_price, grid_mode) SELECT %s, %s, tenant_id, %s, %s, round(%s), %s, %s FROM nodes"
            " WHERE id = %s ON CONFLICT (node_id, ts) DO NOTHING",
            (body["timestamp"], body["node_id"], body["seq"], body["battery"]["soc_percent"],
             body["solar"]["power_w"], body["grid"]["current_price"], body["grid"]["mode"],
             body["node_id"]))
    seen += 1
    if seen == expected:
        print(f"DONE {time.time()}", flush=True)
def on_connect(client, userdata, flags, reason, props):
    client.subscribe("$share/collector/nodes/+/telemetry", qos=1)
client = Client(CallbackAPIVersion.VERSION2, client_id="bench-" + mode,
                protocol=MQTTProtocolVersion.MQTTv5)
client.username_pw_set("collector", password)
client.on_message = on_message
client.on_connect = on_connect
client.on_subscribe = lambda *a: print("SUBSCRIBED", flush=True)
props = Properties(PacketTypes.CONNECT)
props.SessionExpiryInterval = 3600
client.connect("127.0.0.1", int(port), clean_start=False, properties=props)
client.loop_forever()
"""


def _queue_messages(broker: Broker, nodes, per_node: int, start: datetime) -> float:
    """Publishes per_node samples for every node; returns seconds spent."""
    began = time.perf_counter()
    procs = []
    for node in nodes:
        lines = "".join(
            json.dumps(sample(node.id, seq, start + timedelta(seconds=5 * seq))) + "\n"
            for seq in range(per_node)
        )
        proc = subprocess.Popen(
            [
                "mosquitto_pub",
                "-p",
                str(broker.port),
                "-u",
                node.id,
                "-P",
                node.password,
                "-i",
                node.id,  # a node account may use only its own client id
                "-q",
                "1",
                "-V",
                "mqttv5",
                "-t",
                f"nodes/{node.id}/telemetry",
                "-l",
            ],
            stdin=subprocess.PIPE,
            text=True,
        )
        procs.append((proc, lines))
    for proc, lines in procs:
        assert proc.stdin is not None
        proc.stdin.write(lines)
        proc.stdin.close()
    for proc, _ in procs:
        if proc.wait(120) != 0:
            raise RuntimeError("mosquitto_pub failed")
    return time.perf_counter() - began


class ConfirmationCounter:
    """Every node's confirmations, received under its own account and client id."""

    def __init__(self, broker: Broker, nodes) -> None:
        self.messages = 0
        self.bytes = 0  # topic and payload; the MQTT header adds about 7 a message
        self.seqs = 0
        self._lock = threading.Lock()
        self._clients = []
        subscribed = threading.Semaphore(0)
        for node in nodes:
            client = mqtt_client(broker, node.id, node.password)
            client.on_message = self._on_message
            client.on_subscribe = lambda *_: subscribed.release()
            client.subscribe(topics.ingested(node.id), qos=1)
            self._clients.append(client)
        for _ in nodes:
            if not subscribed.acquire(timeout=10):
                raise RuntimeError("a node did not subscribe to its confirmations")

    def _on_message(self, _client, _userdata, msg) -> None:
        ranges = INGEST_CONFIRMATION.validate_json(msg.payload)["seqs"]
        with self._lock:
            self.messages += 1
            self.bytes += len(msg.topic) + len(msg.payload)
            self.seqs += sum(last - first + 1 for first, last in ranges)

    def close(self) -> None:
        for client in self._clients:
            client.disconnect()
            client.loop_stop()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _setup(db: Database, workdir: Path, name: str, nodes: int):
    broker = Broker(workdir / name).start()
    tenant = create_tenant(db)
    return broker, tenant, enroll(db, broker, tenant, count=nodes)


def bench_collector(db: Database, workdir: Path, nodes: int, per_node: int, start: datetime):
    broker, tenant, fleet = _setup(db, workdir, "collector", nodes)
    port = free_port()
    proc = start_module(
        "collector",
        collector_env(db, broker, "collector-bench", port, log_level="WARNING"),
        workdir / "collector.log",
    )
    try:
        wait_for_port(port, 20, proc)
        wait_for(
            lambda: scrape(port).get("wattfleet_collector_broker_connected") == 1,
            20,
            "collector connected",
        )
        total = nodes * per_node
        proc.send_signal(signal.SIGSTOP)
        _queue_messages(broker, fleet, per_node, start)
        confirmations = ConfirmationCounter(broker, fleet)
        pids = {"intake": proc.pid, "writer": collector_writer_pid(proc.pid)}
        if db.proc is not None:
            pids["database"] = db.proc.pid
        cpu_before = {name: cpu_seconds(pid) for name, pid in pids.items()}
        resumed = time.perf_counter()
        proc.send_signal(signal.SIGCONT)
        # Polled at 5 Hz: each scrape costs the collector a few ms of CPU.
        wait_for(
            lambda: scrape(port).get("wattfleet_collector_samples_written_total") == total,
            600,
            "collector to commit everything",
            interval=0.2,
        )
        elapsed = time.perf_counter() - resumed
        cpu = {name: cpu_seconds(pids[name]) - before for name, before in cpu_before.items()}
        rows = count_rows(db, "SELECT count(*) FROM telemetry WHERE tenant_id = %s", (tenant,))
        assert rows == total, f"{rows} rows for {total} messages"
        wait_for(lambda: confirmations.seqs == total, 30, "every sample confirmed")
        confirmations.close()
        metrics = scrape(port)
        metrics["confirmation_bytes"] = confirmations.bytes
        return elapsed, metrics, cpu
    finally:
        stop_process(proc)
        broker.stop()


def bench_subscriber(
    mode: str, db: Database, workdir: Path, nodes: int, per_node: int, start: datetime
) -> float:
    broker, tenant, fleet = _setup(db, workdir, mode, nodes)
    total = nodes * per_node
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            SUBSCRIBER,
            mode,
            str(broker.port),
            broker.passwords["collector"],
            str(total),
            db.url,
            "on" if db.prepared_statements else "none",
        ],
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env=service_env(),
    )
    try:
        assert proc.stdout is not None
        if proc.stdout.readline().strip() != "SUBSCRIBED":
            raise RuntimeError(f"{mode} subscriber did not subscribe")
        proc.send_signal(signal.SIGSTOP)
        _queue_messages(broker, fleet, per_node, start)
        resumed = time.time()
        proc.send_signal(signal.SIGCONT)
        line = proc.stdout.readline()
        if not line.startswith("DONE "):
            raise RuntimeError(f"{mode} subscriber stopped early: {line!r}")
        if mode == "naive":
            rows = count_rows(db, "SELECT count(*) FROM telemetry WHERE tenant_id = %s", (tenant,))
            assert rows == total, f"naive: {rows} rows for {total} messages"
        return float(line.split()[1]) - resumed
    finally:
        stop_process(proc)
        broker.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=50_000)
    parser.add_argument("--nodes", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3, help="report the median of N rounds")
    args = parser.parse_args()
    per_node = args.messages // args.nodes
    total = per_node * args.nodes

    workdir = Path(tempfile.mkdtemp(prefix="wattfleet-bench-"))
    workdir.chmod(0o755)
    db = database_from_env("WATTFLEET_DATABASE_URL")
    seconds: dict[str, list[float]] = {"collector": [], "bare": [], "naive": []}
    cpu: dict[str, list[float]] = {}
    try:
        migrate(db)
        # Distinct, recent time ranges so no phase collides with another's rows.
        base = datetime.now(UTC) - timedelta(days=6)
        for round_ in range(args.rounds):
            start = base + timedelta(hours=3 * round_)
            elapsed, metrics, used = bench_collector(
                db, workdir / f"r{round_}", args.nodes, per_node, start
            )
            seconds["collector"].append(elapsed)
            for name, value in used.items():
                cpu.setdefault(name, []).append(value / total * 1e6)
            for offset, mode in ((1, "bare"), (2, "naive")):
                seconds[mode].append(
                    bench_subscriber(
                        mode,
                        db,
                        workdir / f"r{round_}",
                        args.nodes,
                        per_node,
                        start + timedelta(hours=offset),
                    )
                )
    finally:
        db.stop()
        shutil.rmtree(workdir, ignore_errors=True)

    rate = {name: total / statistics.median(s) for name, s in seconds.items()}
    batches = metrics.get("wattfleet_collector_batch_messages_count", 0)
    print(f"database: {'embedded TimescaleDB (PGlite)' if db.embedded else db.url}")
    print(
        f"messages: {total} from {args.nodes} nodes, QoS 1, queued while paused; "
        f"median of {args.rounds} rounds"
    )
    for name in ("collector", "bare", "naive"):
        runs = ", ".join(f"{total / s:,.0f}" for s in seconds[name])
        print(f"{name:>9}: {rate[name]:>9,.0f} msg/s   (rounds: {runs})")
    print(f"collector / bare : {rate['collector'] / rate['bare']:.2f}")
    print(f"collector / naive: {rate['collector'] / rate['naive']:.1f}x")
    print(
        "CPU per message while the collector drains: "
        + ", ".join(f"{k} {statistics.median(v):.0f} us" for k, v in cpu.items())
    )
    print(
        f"collector batches (last round): {int(batches)} "
        f"(mean {total / batches if batches else 0:.0f} messages)"
    )
    sent = metrics.get("wattfleet_collector_confirmations_total", 0)
    print(
        f"confirmations (last round): {int(sent)} messages, {int(metrics['confirmation_bytes'])}"
        f" bytes of topic and payload: {sent / total:.4f} messages and"
        f" {metrics['confirmation_bytes'] / total:.2f} bytes a sample"
    )


if __name__ == "__main__":
    main()
