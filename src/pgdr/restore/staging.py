"""Where a restore writes before its result is in place, and cleaning up after dead restores.

A restore into ``DIR`` writes into hidden siblings named after its process id (and a token of
the process, ``RUN`` below, as process ids repeat)::

    .DIR.pgdr-restore-PID-RUN        the data directory being written
    .DIR.pgdr-restore-PID-RUN-ID     one backup of an incremental chain (before pg_combinebackup)
    .DIR.pgdr-wal-PID-RUN            the WAL spool of a point-in-time restore
    .DIR.pgdr-replaced-PID-RUN       the previous contents of DIR while --force replaces them

Each running restore also leaves a record in ``$PGDR_HOME/restores/PID.json`` naming its target
(and the cluster directory it creates, if any); the record goes when the restore ends, however
it ends. A process killed with SIGKILL cannot clean up, so whatever carries the PID of a process
that no longer runs is stale: the next restore into the same parent directory removes it, and
``pgdr cleanup`` removes it wherever the records point. Nothing of a live process is touched,
and nothing but these hidden names and cluster directories a dead restore was creating. The previous
contents of a directory whose replacement never arrived are put back, never removed.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import re
import secrets
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pgdr.cluster import LocalCluster
from pgdr.cluster.manager import pid_alive
from pgdr.cluster.sockets import remove_short
from pgdr.config import PgdrSettings
from pgdr.core.errors import PgdrError, RuntimeFailure

STAGING = re.compile(r"\..+\.pgdr-(?:restore|wal|replaced)-(?P<pid>[0-9]+)(?:-.+)?")
RECORDS = "restores"


_TOKENS: dict[int, str] = {}


def _run_id() -> str:
    """This process's id and a token of its own (``PID-rTOKEN``): where process ids repeat (a
    container's command is pid 1 at every start), a dead process's staging is not this one's."""
    pid = os.getpid()
    return f"{pid}-r{_TOKENS.setdefault(pid, secrets.token_hex(4))}"


def staging_dir(target: Path, what: str = "restore") -> Path:
    """The hidden sibling of ``target`` this process writes ``what`` into."""
    return target.with_name(f".{target.name}.pgdr-{what}-{_run_id()}")


def _is_stale(path: Path, pid: int) -> bool:
    if _claimed_by_someone(path):  # whatever its process id says from here
        return False
    if pid == os.getpid():  # this process's, or one's that had its id before
        return not re.search(rf"-{_run_id()}(?:-|$)", path.name)
    return not pid_alive(pid)


@contextlib.contextmanager
def claimed(staging: Path) -> Iterator[None]:
    """Make the staging directory ``staging`` and hold an ``flock`` on it while this process
    writes it. A restore or ``pgdr cleanup`` in another PID namespace (a container sharing the
    directory, where this process's id means another process or none) sees it held and leaves
    it alone: by process id alone, one removed the other's staging while it ran. The lock ends
    with the process however it ends."""
    staging.mkdir(mode=0o700, parents=True)
    fd = os.open(staging, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _claimed_by_someone(path: Path, flags: int = os.O_DIRECTORY) -> bool:
    """Whether some open file holds an ``flock`` on ``path`` (a staging directory, or a
    record with ``flags`` 0); a path that cannot be opened is held by no one."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | flags)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def stale_staging(parent: Path) -> list[Path]:
    """Staging entries in ``parent`` whose process no longer runs."""
    try:
        entries = list(parent.iterdir())
    except OSError:
        return []
    stale = []
    for path in entries:
        match = STAGING.fullmatch(path.name)
        if match and _is_stale(path, int(match["pid"])):
            stale.append(path)
    return stale


def _put_back(path: Path) -> bool:
    """Rename a dead restore's ``replaced`` directory back when its target is missing.

    A restore with ``--force`` moves the old ``DIR`` aside and the new one in; killed between
    the two renames, the aside copy is the only ``DIR`` left, so it goes back, never away.
    """
    match = STAGING.fullmatch(path.name)
    if match is None or "-replaced-" not in path.name:
        return False
    target = path.with_name(path.name[1 : path.name.index(".pgdr-replaced-")])
    if target.exists():
        return False
    path.rename(target)
    return True


def remove_stale(parent: Path) -> list[Path]:
    """Remove the staging of dead restores in ``parent``; returns what was removed.

    The previous contents of a directory whose replacement never arrived are renamed back
    instead of removed (see :func:`_put_back`).
    """
    removed = []
    for path in stale_staging(parent):
        if _put_back(path):
            continue
        shutil.rmtree(path, ignore_errors=True)
        if not path.exists():
            removed.append(path)
    return removed


@contextlib.contextmanager
def restore_record(
    settings: PgdrSettings, target: Path, cluster_dir: Path | None = None
) -> Iterator[None]:
    """Record a running restore for ``pgdr cleanup`` (removed when the block ends).

    Each block has a record of its own (a point-in-time restore's, naming the cluster it makes,
    and the base restore's inside it: one file per process, the inner one overwrote the outer
    and removed it, and a killed restore's cluster was "nothing left over"). The record is held
    with an ``flock`` while the restore runs: that, not its process id (another PID namespace,
    an id used again), tells ``cleanup`` it is running."""
    records = settings.home / RECORDS
    path = records / f"{_run_id()}-{secrets.token_hex(3)}.json"
    data: dict[str, Any] = {"pid": os.getpid(), "target": str(target), "locked": True}
    if cluster_dir is not None:
        data["cluster_dir"] = str(cluster_dir)
    fd = _write_record(records, path, json.dumps(data))
    try:
        yield
    finally:
        path.unlink(missing_ok=True)
        os.close(fd)


def _write_record(records: Path, path: Path, text: str) -> int:
    """Write ``path`` into ``records``, made if missing, and return a descriptor that holds it
    locked (locked before it is seen under its name). A comparison with a backup (a read)
    removes that directory again when it made it and it is empty: if it just went, once more."""
    for _ in range(2):
        with contextlib.suppress(FileNotFoundError):
            return _locked_record(records, path, text)
    return _locked_record(records, path, text)


def _locked_record(records: Path, path: Path, text: str) -> int:
    records.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, text.encode())
        fcntl.flock(fd, fcntl.LOCK_EX)
        tmp.rename(path)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _running(record: Path, data: dict[str, Any]) -> bool:
    """Whether the restore ``record`` describes still runs: its lock is held, or the record
    went meanwhile (the restore ended on its own: what it names is its result, never to be
    removed). Records of an older pgdr, without a lock: its process id is alive."""
    if not data.get("locked"):
        return pid_alive(int(data["pid"]))
    return _claimed_by_someone(record, 0) or not record.exists()


@contextlib.contextmanager
def held(target: Path) -> Iterator[None]:
    """Hold the existing directory ``target`` while this restore rewrites or replaces it: a
    second one (a delta, a ``--force`` restore) is refused meanwhile instead of writing into it
    at the same time. An advisory lock (``flock``) on the directory itself: nothing is created,
    and the lock ends with the process however it ends. A target that does not exist yet is
    not held (each restore writes its own staging; the last rename finds the other's result)."""
    try:
        fd = os.open(target, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except (FileNotFoundError, NotADirectoryError):
        yield
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RuntimeFailure(
                f"Another restore is writing {target}; let it end, then run this one again. "
                "Nothing was changed."
            ) from None
        yield
    finally:
        os.close(fd)


@dataclass
class CleanupReport:
    """What ``pgdr cleanup`` removed."""

    removed: list[str] = field(default_factory=list)
    running: list[int] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"removed": self.removed, "restores_running": self.running}


def _remove_cluster(settings: PgdrSettings, directory: Path) -> bool:
    if not directory.is_dir():
        return False
    cluster = LocalCluster(directory, settings)
    with contextlib.suppress(PgdrError, OSError):
        if cluster.status().running:
            cluster.stop("immediate")
    shutil.rmtree(directory, ignore_errors=True)
    with contextlib.suppress(PgdrError, OSError):
        remove_short(cluster.socket_dir, directory, cluster.user)
    return not directory.exists()


def cleanup(settings: PgdrSettings, places: list[Path] | None = None) -> CleanupReport:
    """Remove what dead restores left: their staging and the clusters they were creating."""
    report = CleanupReport()
    parents = {p.resolve() for p in places or []}
    parents.add((settings.home / "clusters").resolve())
    records = settings.home / RECORDS
    for record in sorted(records.glob("*.json")) if records.is_dir() else []:
        try:
            data = json.loads(record.read_text())
            pid = int(data["pid"])
        except (OSError, ValueError, KeyError, TypeError):
            record.unlink(missing_ok=True)
            continue
        if _running(record, data):
            if record.exists():
                report.running.append(pid)
            continue
        parents.add(Path(data["target"]).parent)
        if data.get("cluster_dir"):
            cluster_dir = Path(data["cluster_dir"])
            parents.add(cluster_dir)
            if _remove_cluster(settings, cluster_dir):
                report.removed.append(str(cluster_dir))
        record.unlink(missing_ok=True)
    for parent in sorted(parents):
        report.removed.extend(str(p) for p in remove_stale(parent))
    return report


def write_failure(exc: OSError, place: Path, what: str) -> RuntimeFailure:
    """One sentence for an OS error while writing a restore into ``place``."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        reason = f"the file system of {place} is full"
    elif exc.errno == errno.EROFS:
        reason = f"{place} is on a read-only file system"
    elif exc.errno in (errno.EACCES, errno.EPERM):
        reason = f"{place} is not writable"
    else:
        reason = f"writing into {place} failed ({exc.strerror or exc})"
    return RuntimeFailure(f"The {what} stopped: {reason}; nothing of it was left behind.")


def check_space(place: Path, needed: int, what: str) -> None:
    """Refuse before writing when ``place``'s file system cannot hold ``needed`` bytes."""
    probe = place
    while not probe.exists():
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if free < needed:
        raise RuntimeFailure(
            f"The {what} needs about {needed / 2**20:,.0f} MiB but the file system of {probe} "
            f"has {free / 2**20:,.0f} MiB free; nothing was written."
        )
