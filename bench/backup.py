"""Benchmark: pgdr backup/restore against pgBackRest and ``pg_basebackup | zstd``.

One PostgreSQL 15 cluster (Debian's, so Debian's pgBackRest 2.45 can take part) filled with
``pgbench -i`` at a scale giving about 2 GB (or, with ``--data convoai``, the ConvoAI sample
with its vectors as ``real[]``: vector-heavy pages that compress poorly); each tool backs it up
and restores it (medians over ``--runs``), all on the same machine with the same two cores:

* pgdr: ``pgdr backup --method files --workers N`` (N = 2 and 1: parallel workers reading the
  data directory) and ``--method stream`` (``pg_basebackup``), each into a local repository
  of its own; each row's ``pgdr restore latest --to DIR --workers N`` restores its own backup
  (the stream backup with 2 workers); ``pgdr restore --delta --force`` after 1% of the
  restored directory's 8 KiB pages were overwritten (against a full restore, and against
  ``pgbackrest restore --delta`` after the same damage); and ``pgdr restore --delta --by-wal``
  of a fresh backup onto a copy of the source after a small ``pgbench`` run (about 1% of the
  pages, spread) and after rows appended (1% of the pages, at the end of one table), its
  changed pages found in the WAL instead of by reading
* pgBackRest: full backup, ``compress-type=zst``, ``process-max=2``, local repo; ``restore``
* ``pg_basebackup -Ft -X fetch -D - | zstd -3 -T2`` to a file; ``zstd -d | tar -x``
* the disk's floors, the least any tool must do: "restore" writes as many bytes as the database
  holds into 1 GiB files from one buffer and syncs them (no reading, no decompression); "delta"
  reads every file of a restored data directory with two readers (a delta restore must read
  them all when changes are spread over every file)

Every step is printed with its MB/s (database size / time) and its CPU use (CPU seconds of the
child processes / wall seconds: how many cores the step kept busy).

Usage: ``.venv/bin/python bench/backup.py [--data pgbench|convoai] [--scale 130] [--runs 1]
[--cache cold] [--keep]``
"""

from __future__ import annotations

import argparse
import base64
import compileall
import contextlib
import json
import os
import random
import re
import resource
import secrets
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import psycopg

import pgdr
from pgdr.cluster import LocalCluster, PgInstallation, choose_installation
from pgdr.config import PgdrSettings
from pgdr.sample import VectorType, load_sample

STANZA = "bench"
PGDR_VARIANTS = {  # each backs up into a repository of its own, restored by the same row
    "pgdr stream": ["--method", "stream", "--workers", "2"],
    "pgdr files w=1": ["--method", "files", "--workers", "1"],
    "pgdr files w=2": ["--method", "files", "--workers", "2"],
}


def du(path: Path) -> int:
    total = 0
    for p in path.rglob("*"):
        if p.is_file() and not p.is_symlink():
            total += p.stat().st_size
    return total


WARM: list[Path] = []  # directories read into the page cache before each timed step


def settle() -> None:
    """Same start for every tool: dirty pages written, page cache dropped (needs root), then
    (``--cache warm``) the database's files read back in, as for a database that fits in RAM."""
    os.sync()
    with contextlib.suppress(OSError):
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
    for directory in WARM:
        for path in directory.rglob("*"):
            if path.is_file() and not path.is_symlink():
                with path.open("rb") as handle:
                    while handle.read(1 << 20):
                        pass


CPU: list[float] = []  # CPU seconds of the children during the last timed step


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _wait_for_archiving(conn: psycopg.Connection[Any]) -> None:
    """Until the archiver has taken every segment a load left (thousands at 10 GB)."""
    query = "SELECT count(*) FROM pg_ls_archive_statusdir() WHERE name LIKE '%.ready'"
    deadline = time.monotonic() + 1800
    while (row := conn.execute(query).fetchone()) and row[0]:
        if time.monotonic() > deadline:
            sys.exit(f"{row[0]} WAL segments still not archived after 30 minutes: see the log")
        print(f"  {row[0]} WAL segments still to archive ...", flush=True)
        time.sleep(10)


def timed(func: Callable[[], None]) -> float:
    settle()
    cpu = _children_cpu()
    began = time.perf_counter()
    func()
    CPU.append(_children_cpu() - cpu)
    return time.perf_counter() - began


def damage_pages(root: Path, fraction: float, seed: int = 15) -> int:
    """Overwrite ``fraction`` of the 8 KiB pages of the relation files under ``root/base``
    (spread over all of them, as a pgbench run spreads its updates); returns pages changed."""
    rng = random.Random(seed)
    changed = 0
    for path in sorted((root / "base").rglob("*")):
        if not path.is_file() or path.stat().st_size < 8192:
            continue
        pages = path.stat().st_size // 8192
        with path.open("r+b") as handle:
            for page in range(pages):
                if rng.random() < fraction:
                    handle.seek(page * 8192 + 100)
                    handle.write(rng.randbytes(64))
                    changed += 1
    os.sync()
    return changed


WRITE_FLOOR = """
import os, sys
target, left = sys.argv[1], int(sys.argv[2])
piece, n = os.urandom(1 << 20), 0
while left > 0:
    size = min(left, 1 << 30)
    with open(os.path.join(target, f"segment.{n}"), "wb") as out:
        for start in range(0, size, len(piece)):
            out.write(piece[: min(len(piece), size - start)])
    left, n = left - size, n + 1
os.sync()
"""


def floors(directory: Path, db_bytes: int, record: Callable[[str, str, float], None]) -> None:
    """The disk's floors (see the module's docstring), recorded as the tool "disk floor"."""
    read_all = f"find {directory} -type f -print0 | xargs -0 -P2 -n 64 cat > /dev/null"
    record("disk floor", "delta", timed(lambda: run(["bash", "-o", "pipefail", "-c", read_all])))
    scratch = directory.with_name("write-floor")
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir()
    write = [sys.executable, "-c", WRITE_FLOOR, str(scratch), str(db_bytes)]
    record("disk floor", "restore", timed(lambda: run(write)))
    shutil.rmtree(scratch, ignore_errors=True)


def load_data(data: str, scale: float, inst: PgInstallation, conninfo: str) -> None:
    """pgbench's tables, or the ConvoAI sample with its vectors as ``real[]`` (PostgreSQL 15
    has no pgvector here, and pgBackRest runs against Debian's 15)."""
    if data == "pgbench":
        pgbench = str(inst.tool("pgbench"))
        run([pgbench, "-i", "-s", str(int(scale)), "-I", "dtGvp", "-q", conninfo])
    else:
        load_sample(conninfo, scale=scale, vector_type=VectorType.ARRAY, vector_indexes=False)


def run(args: list[str], **kwargs: object) -> None:
    run_out(args, [], **kwargs)


def run_out(args: list[str], out: list[str], **kwargs: object) -> None:
    """:func:`run`, keeping what the program printed in ``out``."""
    result = subprocess.run(args, check=False, capture_output=True, text=True, **kwargs)  # type: ignore[call-overload]
    if result.returncode != 0:
        sys.exit(f"{' '.join(args[:3])} failed ({result.returncode}): {result.stderr[-2000:]}")
    out.append(result.stdout)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data",
        choices=["pgbench", "convoai"],
        default="pgbench",
        help="pgbench tables, or the ConvoAI sample with its vectors as real[] (vector-heavy)",
    )
    parser.add_argument(
        "--scale",
        type=float,
        default=130,
        help="pgbench scale (130 = ~2 GB) or ConvoAI sample scale (20 = ~2 GB)",
    )
    parser.add_argument("--runs", type=int, default=1, help="runs per tool; medians reported")
    parser.add_argument("--dir", type=Path, help="default: /tmp/pgdr-bench-backup[-convoai]")
    parser.add_argument("--keep", action="store_true", help="keep the cluster for another run")
    parser.add_argument(
        "--cache",
        choices=["warm", "cold"],
        default="warm",
        help="before each step: drop the page cache, then (warm) read the database back in",
    )
    return parser.parse_args()


PGBR_CONF = """[global]
repo1-path={repo}
repo1-retention-full=1
compress-type=zst
process-max=2
start-fast=y
log-level-console=warn
log-level-file=off
log-path={dir}/log
lock-path={dir}/lock
spool-path={dir}/spool

[{stanza}]
pg1-path={data_dir}
pg1-socket-path={socket_dir}
pg1-port={port}
pg1-user=postgres
"""


class Bench:
    """One cluster, its pgBackRest stanza and pgdr repository, and the figures recorded."""

    def __init__(self, opts: argparse.Namespace) -> None:
        self.opts = opts
        self.base: Path = opts.dir or Path(
            "/tmp/pgdr-bench-backup" + ("" if opts.data == "pgbench" else "-convoai")
        )
        self.base.mkdir(parents=True, exist_ok=True)
        self.base.chmod(0o711)
        settings = PgdrSettings(home=self.base / "home")
        settings.home.mkdir(exist_ok=True)
        settings.home.chmod(0o711)
        self.settings = settings
        self.cluster = LocalCluster(settings.home / "clusters" / "pg15", settings)
        self.inst = choose_installation(None, 15)
        self.user = self.cluster.user
        self.pgbr_dir = self.base / "pgbackrest"
        self.pgbr_conf = self.pgbr_dir / "pgbackrest.conf"
        self.zst_file = self.base / "basebackup.tar.zst"
        self.restore_dir = self.base / "restore"
        self.pgdr = [sys.executable, "-m", "pgdr"]
        self.results: dict[str, dict[str, list[float]]] = {}
        self.sizes: dict[str, int] = {}
        self.conninfo = ""
        self.db_bytes = 0
        self.env: dict[str, str] = {}

    def set_up(self) -> None:
        """The cluster (loaded once), pgBackRest's stanza, pgdr's key and environment."""
        # pgdr starts as an installed tool does, from compiled bytecode: under
        # PYTHONDONTWRITEBYTECODE every start would compile its modules again (0.1-0.3 s)
        compileall.compile_dir(Path(pgdr.__file__).parent, quiet=1)
        fresh = not self.cluster.exists
        if fresh:
            self.cluster.create(self.inst)
        self._configure_pgbackrest()
        self.cluster.stop()
        self.cluster.start()
        self.conninfo = self.cluster.conninfo()
        if fresh:
            print(f"Loading {self.opts.data} scale {self.opts.scale:g} ...", flush=True)
            data, scale = self.opts.data, self.opts.scale
            load = timed(lambda: load_data(data, scale, self.inst, self.conninfo))
            print(f"  loaded in {load:.0f} s", flush=True)
        self.pgbr("stanza-create")  # before the wait: archive-push fails until it exists
        with psycopg.connect(self.conninfo, autocommit=True) as conn:
            conn.execute("CHECKPOINT")
            _wait_for_archiving(conn)  # pgBackRest's check waits 60 s for the newest segment
            row = conn.execute("SELECT sum(pg_database_size(oid)) FROM pg_database").fetchone()
            self.db_bytes = int(row[0]) if row else 0
        print(f"Database: PostgreSQL {self.inst.version}, {self.db_bytes / 1e9:.2f} GB", flush=True)
        print(f"Load average at the start: {os.getloadavg()[0]:.1f}", flush=True)
        if self.opts.cache == "warm":
            WARM.append(self.cluster.data_dir)
        self.pgbr("check")
        self.env = self._pgdr_env()

    def _configure_pgbackrest(self) -> None:
        self.pgbr_dir.mkdir(exist_ok=True)
        for sub in ("repo", "log", "lock", "spool"):
            (self.pgbr_dir / sub).mkdir(exist_ok=True)
            self.user.own(self.pgbr_dir / sub, 0o700)
        self.user.own(self.pgbr_dir, 0o755)
        self.pgbr_conf.write_text(
            PGBR_CONF.format(
                repo=self.pgbr_dir / "repo",
                dir=self.pgbr_dir,
                stanza=STANZA,
                data_dir=self.cluster.data_dir,
                socket_dir=self.cluster.socket_dir,
                port=self.cluster.port,
            )
        )
        self.pgbr_conf.chmod(0o644)
        self.cluster.set_config(
            "archive_mode = on\n"
            f"archive_command = 'pgbackrest --config={self.pgbr_conf} --stanza={STANZA} "
            "archive-push %p'\n"
            "max_wal_size = '4GB'\n"
            "checkpoint_timeout = '30min'\n"
        )

    def _pgdr_env(self) -> dict[str, str]:
        key_file = self.base / "master.key"
        if not key_file.exists():
            key_file.write_text(base64.b64encode(secrets.token_bytes(32)).decode() + "\n")
            key_file.chmod(0o600)
        env = dict(os.environ)
        env.update(
            {
                "PGDR_HOME": str(self.settings.home),
                "PGDR_ENCRYPTION_KEY_FILE": str(key_file),
                "DATABASE_URL": self.conninfo,
            }
        )
        return env

    def pgbr(self, *args: str) -> None:
        run(
            ["pgbackrest", f"--config={self.pgbr_conf}", f"--stanza={STANZA}", *args],
            user=self.user.uid,
            group=self.user.gid,
            extra_groups=[],
            cwd="/",
        )

    def record(self, tool: str, what: str, seconds: float) -> None:
        self.results.setdefault(tool, {}).setdefault(what, []).append(seconds)
        busy = CPU[-1] / seconds if seconds else 0.0
        print(
            f"  {tool:<22} {what:<8} {seconds:7.1f} s {self.db_bytes / 1e6 / seconds:7.0f} MB/s "
            f"cpu {busy:.2f} cores",
            flush=True,
        )

    def shell(self, command: str) -> None:
        run(["bash", "-o", "pipefail", "-c", command])

    def backups(self) -> None:
        """Every tool backs the database up; the pgdr repository keeps the last variant's."""
        for tool, args in PGDR_VARIANTS.items():
            shutil.rmtree(self.repo_of(tool), ignore_errors=True)
            command = [*self.pgdr, "backup", *args]
            self.record(tool, "backup", timed(partial(run, command, env=self.env_of(tool))))
            self.sizes[tool] = du(self.repo_of(tool))
        self.record("pgBackRest", "backup", timed(lambda: self.pgbr("backup", "--type=full")))
        self.sizes["pgBackRest"] = du(self.pgbr_dir / "repo" / "backup")
        self.zst_file.unlink(missing_ok=True)
        basebackup = (
            f"{self.inst.tool('pg_basebackup')} -d '{self.conninfo}' -D - -Ft -X fetch -c fast "
            f"| zstd -q -3 -T2 -o {self.zst_file}"
        )
        self.record("pg_basebackup | zstd", "backup", timed(lambda: self.shell(basebackup)))
        self.sizes["pg_basebackup | zstd"] = self.zst_file.stat().st_size

    def repo_of(self, tool: str) -> Path:
        """The pgdr repository that ``tool``'s row backs up into and restores from."""
        return self.base / ("pgdr-repo-" + tool.removeprefix("pgdr ").replace(" ", "-"))

    def env_of(self, tool: str) -> dict[str, str]:
        return {**self.env, "PGDR_REPO": str(self.repo_of(tool))}

    def pgdr_restores(self) -> None:
        """Each pgdr row restores its own backup with as many workers as it took (a stream
        backup with 2), then the disk's floors, then the delta restore of the files backup."""
        restore = [*self.pgdr, "restore", "latest", "--to", str(self.restore_dir)]
        for tool, args in PGDR_VARIANTS.items():
            shutil.rmtree(self.restore_dir, ignore_errors=True)
            command = [*restore, "--workers", args[-1]]
            self.record(tool, "restore", timed(partial(run, command, env=self.env_of(tool))))
        floors(self.restore_dir, self.db_bytes, self.record)
        pages = damage_pages(self.restore_dir, 0.01)
        print(f"  (overwrote {pages} pages, 1%, in the restored directory)", flush=True)
        delta = [*restore, "--delta", "--force", "--workers", "2"]
        env = self.env_of("pgdr files w=2")
        self.record("pgdr files w=2", "delta", timed(partial(run, delta, env=env)))

    def peer_restores(self) -> None:
        """pgBackRest's full and delta restores, then the tarball's."""
        self._empty_restore_dir()
        self.user.own(self.restore_dir, 0o700)
        target = f"--pg1-path={self.restore_dir}"
        self.record("pgBackRest", "restore", timed(lambda: self.pgbr("restore", target)))
        damage_pages(self.restore_dir, 0.01)
        self.record("pgBackRest", "delta", timed(lambda: self.pgbr("restore", "--delta", target)))
        self._empty_restore_dir()
        untar = f"zstd -q -d -c {self.zst_file} | tar -x -C {self.restore_dir} && sync"
        self.record("pg_basebackup | zstd", "restore", timed(lambda: self.shell(untar)))
        shutil.rmtree(self.restore_dir, ignore_errors=True)

    def wal_delta(self, workload: str) -> None:
        """``restore --delta --by-wal`` after ``workload`` (below): a pgdr files backup
        (untimed), the work on the source, a checkpoint, the source stopped and its directory
        copied, then the backup restored onto the copy, its changed pages found in the WAL the
        copy's ``pg_wal`` kept since the backup (``wal_keep_size``)."""
        env = {**self.env, "PGDR_REPO": str(self.base / "pgdr-repo-by-wal")}
        shutil.rmtree(env["PGDR_REPO"], ignore_errors=True)
        run([*self.pgdr, "backup", "--method", "files", "--workers", "2"], env=env)
        what = self._change(workload)
        self.cluster.stop()
        shutil.rmtree(self.restore_dir, ignore_errors=True)
        run(["cp", "-a", str(self.cluster.data_dir), str(self.restore_dir)])
        self.cluster.start()
        out: list[str] = []
        restore = [*self.pgdr, "restore", "latest", "--to", str(self.restore_dir), "--json"]
        delta = [*restore, "--delta", "--by-wal", "--force", "--workers", "2"]
        tool = f"pgdr --by-wal {workload}"
        self.record(tool, "delta", timed(partial(run_out, delta, out, env=env)))
        notes = "\n".join(json.loads(out[-1])["notes"])
        named = re.search(r"name ([\d,]+) pages", notes)
        if named is None:
            sys.exit(f"restore --by-wal read every page:\n{notes}")
        share = int(named[1].replace(",", "")) / (self.db_bytes // 8192)
        print(f"  ({what}; the WAL named {share:.1%} of the pages)", flush=True)
        shutil.rmtree(self.restore_dir, ignore_errors=True)

    def _change(self, workload: str) -> str:
        """About 1% of the database's pages changed: "pgbench" (its transactions update random
        accounts, spread over the whole table) or "append" (rows added to pgbench_history, as an
        application adds messages); then a checkpoint. Says what it did."""
        pages = self.db_bytes // 8192
        with psycopg.connect(self.conninfo, autocommit=True) as conn:
            if workload == "append":
                rows = pages // 100 * 150  # about 150 history rows fill a page
                conn.execute(
                    "INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) "
                    "SELECT 1, 1, g, 0, now() FROM generate_series(1, %s) g",
                    (rows,),
                )
                what = f"{rows:,} rows appended"
            else:
                transactions = pages // 100 // 2  # each: a random account's page and index
                pgbench = [str(self.inst.tool("pgbench")), "-n", "-c", "2", "-j", "2"]
                run([*pgbench, "-t", str(transactions // 2), self.conninfo])
                what = f"{transactions:,} pgbench transactions"
            conn.execute("CHECKPOINT")  # the changed pages on disk, as they would be by now
        return what

    def _empty_restore_dir(self) -> None:
        shutil.rmtree(self.restore_dir, ignore_errors=True)
        self.restore_dir.mkdir()

    def report(self) -> None:
        print()
        print(f"Load average at the end: {os.getloadavg()[0]:.1f} (2 cores, shared)")
        print(
            f"Database {self.db_bytes / 1e9:.2f} GB ({self.opts.data} scale {self.opts.scale:g}), "
            f"medians of {self.opts.runs}, {self.opts.cache} page cache"
        )
        print(
            f"{'tool':<22} {'stored':>10} {'backup s':>9} {'MB/s':>6} {'restore s':>10} "
            f"{'delta s':>8}"
        )
        med = {t: {w: statistics.median(v) for w, v in d.items()} for t, d in self.results.items()}
        for tool, m in med.items():
            stored = f"{self.sizes[tool] / 1e6:>8.0f} MB" if tool in self.sizes else f"{'':>11}"
            cells = [f"{m[w]:.1f}" if w in m else "" for w in ("backup", "restore", "delta")]
            rate = f"{self.db_bytes / 1e6 / m['backup']:.0f}" if "backup" in m else ""
            print(f"{tool:<22} {stored} {cells[0]:>9} {rate:>6} {cells[1]:>10} {cells[2]:>8}")
        self._ratios(med)

    def _ratios(self, med: dict[str, dict[str, float]]) -> None:
        ref = med["pgBackRest"]
        zstd = med["pg_basebackup | zstd"]
        for tool in PGDR_VARIANTS:
            m = med[tool]
            line = f"{tool}/pgBackRest: backup {m['backup'] / ref['backup']:.2f}"
            if "restore" in m:
                line += f", restore {m['restore'] / ref['restore']:.2f}"
            line += f", size {self.sizes[tool] / self.sizes['pgBackRest']:.2f}"
            line += f"; /pg_basebackup|zstd: backup {m['backup'] / zstd['backup']:.2f}"
            print(line)
        files1, files2 = med["pgdr files w=1"], med["pgdr files w=2"]
        print(
            f"1 -> 2 workers: backup {files1['backup'] / files2['backup']:.2f}x faster, "
            f"restore {files1['restore'] / files2['restore']:.2f}x faster"
        )
        print(
            f"delta after 1% of pages changed / full restore: pgdr "
            f"{files2['delta'] / files2['restore']:.2f}, pgBackRest "
            f"{ref['delta'] / ref['restore']:.2f}"
        )
        for workload in ("pgbench", "append"):
            if f"pgdr --by-wal {workload}" in med:
                by_wal = med[f"pgdr --by-wal {workload}"]["delta"]
                print(
                    f"delta --by-wal after {workload} (1% of pages) / full restore: "
                    f"pgdr {by_wal / files2['restore']:.2f}"
                )
        disk = med["disk floor"]
        print(
            f"disk floors: restore {disk['restore']:.1f} s = "
            f"{disk['restore'] / ref['restore']:.2f} of pgBackRest's restore; reading everything "
            f"{disk['delta']:.1f} s = {disk['delta'] / files2['restore']:.2f} of pgdr's full "
            "restore"
        )


def main() -> None:
    opts = parse_args()
    bench = Bench(opts)
    bench.set_up()
    for attempt in range(opts.runs):
        print(f"Run {attempt + 1}/{opts.runs}", flush=True)
        bench.backups()
        bench.pgdr_restores()
        bench.peer_restores()
        if opts.data == "pgbench":
            bench.wal_delta("pgbench")
            bench.wal_delta("append")
    bench.report()
    if not opts.keep:
        bench.cluster.destroy()
        shutil.rmtree(bench.base, ignore_errors=True)


if __name__ == "__main__":
    main()
