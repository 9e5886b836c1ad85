"""``/api/health`` and ``/metrics`` of a real ``pgdr serve`` under 200 concurrent clients.

It starts a PostgreSQL cluster and ``pgdr serve`` on loopback, waits for the first monitor round,
then loads each endpoint with the database up, then with it stopped (connections refused), in
one or both of two shapes:

* ``closed``: ``--clients`` clients, one keep-alive connection each, each sending its next
  request the instant the previous answer arrives, ``--requests`` in all. This measures the
  server's saturation: every client always has a request waiting, so latency is about
  clients / throughput (200 clients at 1,000 req/s queue 200 ms whatever the server does);
* ``open``: ``--clients`` clients (load balancers, probes, scrapers), each sending ``--rate``
  requests per second for ``--seconds`` on a clock: a request is sent when it is due even when
  the previous answer has not arrived (then on a second connection of that client), and its
  latency counts from when it was due, so a slow answer cannot slow the sender down and hide
  itself. The clients' start times are spread evenly over one period.

For each phase, shape and endpoint it prints p50/p99/max latency, throughput, the answers by
status (a request that gets no answer within ``--timeout`` or whose connection is reset is
counted as ``unanswered``), the connections opened, and in the open shape how late the sender
itself was (if that is large, the load generator, not the server, was the bottleneck).

The clients speak HTTP/1.1 on raw asyncio streams (uvloop when installed): httpx's connection
pool costs more CPU per request than the server under test once 200 connections are open, and
it runs on the same cores. While the health load runs with the database up, a separate
connection, in a process of its own, samples ``pg_stat_activity`` every 10 ms for the health
probe's statement in flight and prints the most seen at once (single-flight means at most 1;
sampling can miss a probe but never invents one). ``--health-cache 0`` makes every request
want a fresh probe: the hardest case.

    python bench/health.py --mode both --clients 200 --requests 5000 --rate 5 --seconds 10
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import multiprocessing
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg

from pgdr.cluster import LocalCluster, choose_installation, find_free_port
from pgdr.config import PgdrSettings

TOKEN = "bench-token-0123456789abcdef"
PROBE_MARK = "superuser_reserved_connections"  # a word of the probe's statement (pool/health.py)
ENDPOINTS = ("/api/health", "/metrics")
Conn = tuple[asyncio.StreamReader, asyncio.StreamWriter]


@dataclass
class Phase:
    latencies: list[float] = field(default_factory=list)
    codes: Counter[str] = field(default_factory=Counter)
    lag: list[float] = field(default_factory=list)  # open shape: how late each send was
    connections: int = 0
    wall: float = 0.0


class Client:
    """One client: keep-alive connections to the server (a second one only while a request is
    still in flight when the next is due), raw HTTP/1.1."""

    def __init__(self, host: str, port: int, path: str, timeout: float, phase: Phase) -> None:
        self.host, self.port, self.timeout, self.phase = host, port, timeout, phase
        self.request = (
            f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nAuthorization: Bearer {TOKEN}\r\n\r\n"
        ).encode()
        self.idle: list[Conn] = []

    async def _exchange(self, conn: Conn | None) -> tuple[Conn, int, bool]:
        if conn is None:
            conn = await asyncio.open_connection(self.host, self.port)
            self.phase.connections += 1
        reader, writer = conn
        writer.write(self.request)
        head = (await reader.readuntil(b"\r\n\r\n")).lower()
        at = head.index(b"\r\ncontent-length:") + 17
        await reader.readexactly(int(head[at : head.index(b"\r\n", at)]))
        return conn, int(head[9:12]), b"\r\nconnection: close" not in head

    async def get(self, due: float) -> None:
        """One request; its latency counts from ``due``."""
        conn = self.idle.pop() if self.idle else None
        try:
            conn, code, keep = await asyncio.wait_for(self._exchange(conn), self.timeout)
        except (OSError, EOFError, ValueError, TimeoutError, asyncio.LimitOverrunError) as exc:
            self.phase.codes[f"unanswered ({type(exc).__name__})"] += 1
            if conn is not None:
                conn[1].close()
            return
        self.phase.latencies.append(time.perf_counter() - due)
        self.phase.codes[str(code)] += 1
        if keep:
            self.idle.append(conn)
        else:
            conn[1].close()

    def close(self) -> None:
        for _reader, writer in self.idle:
            writer.close()


async def closed_loop(clients: list[Client], requests: int) -> None:
    remaining = requests

    async def worker(client: Client) -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            await client.get(time.perf_counter())

    await asyncio.gather(*(worker(c) for c in clients))


async def open_loop(clients: list[Client], rate: float, seconds: float, phase: Phase) -> None:
    period, start = 1 / rate, time.perf_counter() + 0.2

    async def sender(i: int, client: Client) -> None:
        first = start + i * period / len(clients)
        sent: list[asyncio.Task[None]] = []
        for k in range(round(rate * seconds)):
            due = first + k * period
            if (delay := due - time.perf_counter()) > 0:
                await asyncio.sleep(delay)
            phase.lag.append(time.perf_counter() - due)
            sent.append(asyncio.create_task(client.get(due)))
        await asyncio.gather(*sent)

    await asyncio.gather(*(sender(i, c) for i, c in enumerate(clients)))


async def load(base: str, path: str, args: argparse.Namespace, mode: str) -> Phase:
    phase = Phase()
    host, port = base.removeprefix("http://").split(":")
    clients = [Client(host, int(port), path, args.timeout, phase) for _ in range(args.clients)]
    started = time.perf_counter()
    if mode == "closed":
        await closed_loop(clients, args.requests)
    else:
        await open_loop(clients, args.rate, args.seconds, phase)
    phase.wall = time.perf_counter() - started
    for client in clients:
        client.close()
    return phase


def run_async(make: Callable[[], Awaitable[Any]]) -> Any:
    """On uvloop when installed (a cheaper generator leaves more of the cores to the server),
    without the generator's garbage collector: a full collection of its heap stalls the sender
    for tens of milliseconds, counted as the server's latency."""
    gc.collect()
    gc.disable()
    try:
        try:
            import uvloop  # noqa: PLC0415
        except ImportError:
            return asyncio.run(make())
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(make())
    finally:
        gc.enable()


class ProbeSampler:
    """Samples how many health probes are running at once in the database (at most 1 wanted).

    It runs in a process of its own: as a thread of the load generator, its queries took the
    generator's GIL every 10 ms and showed up as the server's latency."""

    def __init__(self, conninfo: str) -> None:
        self.conninfo = conninfo
        self.most = 0
        self.samples = 0
        context = multiprocessing.get_context("fork")
        self._stop = context.Event()
        self._most = context.Value("i", 0)
        self._count = context.Value("i", 0)
        self._process: Any = None
        self._context = context

    def __enter__(self) -> ProbeSampler:
        self._stop.clear()
        args = (self.conninfo, self._stop, self._most, self._count)
        self._process = self._context.Process(target=_sample, args=args, daemon=True)
        self._process.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._process.join()
        self.most = max(self.most, int(self._most.value))
        self.samples = int(self._count.value)


def _sample(conninfo: str, stop: Any, most: Any, count: Any) -> None:
    with psycopg.connect(conninfo, autocommit=True) as conn:
        while not stop.is_set():
            row = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' "
                "AND pid <> pg_backend_pid() AND query LIKE %s",
                (f"%{PROBE_MARK}%",),
            ).fetchone()
            most.value = max(int(most.value), int(row[0]) if row else 0)
            count.value += 1
            time.sleep(0.01)  # every 10 ms: a tighter loop would load a core itself


def start_serve(env: dict[str, str], args: argparse.Namespace, log: Path) -> tuple[Any, str]:
    port = find_free_port()
    cmd = [sys.executable, "-m", "pgdr", "serve", "--port", str(port), "--interval", "3600"]
    proc = subprocess.Popen(
        [*cmd, "--health-cache", str(args.health_cache)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=log.open("w"),
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            # /metrics answers once the first monitor round is in: no round runs during the load
            if httpx.get(
                base + "/metrics", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30
            ).is_success:
                return proc, base
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.terminate()
    raise SystemExit("pgdr serve did not answer within 60 s")


def settle(base: str) -> None:
    """Wait until the server has worked off what the previous load left queued (it answers one
    request within a second), so one measurement does not pay for the previous one's backlog."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            httpx.get(base + "/api/health", timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(1)


def ms(values: list[float], q: float) -> str:
    if not values:
        return "-"
    ordered = sorted(values)
    if q == 0.5:
        return f"{statistics.median(ordered) * 1000:.1f}"
    return f"{ordered[min(len(ordered) - 1, int(len(ordered) * q))] * 1000:.1f}"


def line(state: str, path: str, shape: str, phase: Phase) -> str:
    total = sum(phase.codes.values())
    answered = sum(n for code, n in phase.codes.items() if not code.startswith("unanswered"))
    codes = ", ".join(f"{c}: {n}" for c, n in sorted(phase.codes.items()))
    lag = f"{max(phase.lag) * 1000:.0f}" if phase.lag else "-"
    return (
        f"| {state} | {path} | {shape} | {answered:,}/{total:,} | {ms(phase.latencies, 0.5)} | "
        f"{ms(phase.latencies, 0.99)} | {ms(phase.latencies, 1.0)} | "
        f"{answered / phase.wall:,.0f} | {codes} | {phase.connections} | {lag} |"
    )


def run_phase(
    base: str, state: str, args: argparse.Namespace, rows: list[str], sampler: ProbeSampler | None
) -> None:
    for mode in ("closed", "open") if args.mode == "both" else (args.mode,):
        shape = (
            f"closed, {args.clients} clients"
            if mode == "closed"
            else f"open, {args.clients} × {args.rate:g}/s"
        )
        for path in ENDPOINTS:
            if sampler is not None and path == "/api/health":
                with sampler:
                    phase = run_async(lambda p=path, m=mode: load(base, p, args, m))
            else:
                phase = run_async(lambda p=path, m=mode: load(base, p, args, m))
            settle(base)
            rows.append(line(state, path, shape, phase))
            print(rows[-1], flush=True)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=("closed", "open", "both"), default="both")
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--requests", type=int, default=5000, help="closed: per endpoint, phase")
    parser.add_argument("--rate", type=float, default=5.0, help="open: requests/s per client")
    parser.add_argument("--seconds", type=float, default=10.0, help="open: per endpoint, phase")
    parser.add_argument("--health-cache", type=float, default=1.0)
    parser.add_argument("--connect-timeout-ms", type=int, default=2000)
    parser.add_argument("--timeout", type=float, default=30.0, help="client-side, seconds")
    parser.add_argument("--home", type=Path, default=None)
    parser.add_argument(
        "--server-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="for pgdr serve only (e.g. PYTHONPATH=another checkout's src, to compare)",
    )
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    home = args.home or Path(tempfile.mkdtemp(prefix="pgdr-bench-health-", dir="/tmp"))
    home.chmod(0o711)
    cluster = LocalCluster(home / "clusters" / "bench", PgdrSettings(home=home))
    if not cluster.exists:
        cluster.create(choose_installation(None, 18))
    cluster.start()
    conninfo = cluster.conninfo()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "DB_"))}
    env |= {
        "PGDR_HOME": str(home / "serve"),
        "DATABASE_URL": conninfo,
        "PGDR_API_TOKEN": TOKEN,
        "DB_CONNECTION_TIMEOUT": str(args.connect_timeout_ms),
    }
    env |= dict(item.split("=", 1) for item in args.server_env)
    rows: list[str] = []
    log = home / "serve.log"
    proc, base = start_serve(env, args, log)
    load_before = os.getloadavg()
    try:
        said = [ln for ln in log.read_text().splitlines() if "Serving on" in ln]
        print(
            f"pgdr serve: {said[0].strip() if said else '(said nothing)'}; "
            f"--health-cache {args.health_cache:g}, DB_CONNECTION_TIMEOUT "
            f"{args.connect_timeout_ms} ms; {os.cpu_count()} cores, load average "
            f"{load_before[0]:.1f} (1 min) {load_before[1]:.1f} (5 min) at the start",
            flush=True,
        )
        sampler = ProbeSampler(conninfo)
        run_phase(base, "up", args, rows, sampler)
        cluster.stop()
        run_phase(base, "down", args, rows, None)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        cluster.stop()
        if args.home is None:  # a temporary home is not left behind (a cluster each run)
            shutil.rmtree(home, ignore_errors=True)  # the stopped cluster with it
    print(f"\nload average {os.getloadavg()[0]:.1f} (1 min) at the end")
    print()
    print(
        "| database | endpoint | load | answered | p50 ms | p99 ms | max ms | req/s "
        "| status codes | connections | sender late ms (max) |"
    )
    print("| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: |")
    print("\n".join(rows))
    print(
        f"\nhealth probes in flight at once (database up, {sampler.samples:,} samples of "
        f"pg_stat_activity): at most {sampler.most}"
    )


if __name__ == "__main__":
    main()
