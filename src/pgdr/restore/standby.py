"""Rebuild a replica from the repository: a restored data directory that starts as a standby.

``pgdr restore --as-standby --primary-conninfo-env VAR --to DIR`` restores a base backup (the
ordinary staged restore) and then configures it the way ``pg_basebackup -R`` would, with two
differences:

* **No password in clear in the configuration.** The connection string is read from the
  environment variable VAR (never argv); a password in it is taken out of ``primary_conninfo``
  and written to ``DIR/pgdr-primary.pgpass`` (mode 0600, owned by the server's OS user), which
  ``primary_conninfo`` names with ``passfile=``. The file lives inside the data directory, as
  everything a restore writes does; a base backup of this node carries it (pgdr's backups are
  encrypted). Without a password in VAR nothing is written and the server's user's own
  ``~/.pgpass`` (or a trust/cert rule) applies.
* **It catches up from the repository.** The complete WAL segments the repository holds from the
  backup's start along the newest timeline are fetched, authenticated, and spooled into
  ``DIR/pgdr_standby_wal`` (never the streamer's partial segment: a standby reads its archive
  before ``pg_wal``, and a zero-padded copy there would hide what it streamed since);
  ``restore_command`` copies from there (``cp``: the server's OS user needs neither pgdr nor
  the keys) and ``archive_cleanup_command`` (``pg_archivecleanup``) empties the spool as the
  standby's restartpoints pass it. Beyond the spool the standby streams from the primary. A
  server whose OS user can run pgdr may instead use ``restore_command = 'pgdr wal fetch %f %p'``
  to keep falling back on the repository later (docs/high-availability.md).

The settings go at the end of ``postgresql.auto.conf`` (where ``ALTER SYSTEM`` and
``pg_basebackup -R`` put them) and ``standby.signal`` is created; nothing else changes. Without
a readable ``primary_conninfo`` (VAR unset or empty), without the backup's WAL in the repository
or with a repository that lost what pgdr recorded, the restore refuses before writing.
"""

from __future__ import annotations

import os
import shlex
import shutil
from collections.abc import Callable
from pathlib import Path

from psycopg.conninfo import conninfo_to_dict, make_conninfo

from pgdr.backup.repository import Repository
from pgdr.cluster import installation_for_major
from pgdr.cluster.service_user import ServiceUser, resolve_service_user
from pgdr.core.errors import ConfigError
from pgdr.restore.base import RestoreResult, restore_backup
from pgdr.restore.pitr import PitrPlan, fetch_wal, plan_pitr
from pgdr.restore.target import Target
from pgdr.wal.archive import WalArchive, repository_archive

PASSFILE = "pgdr-primary.pgpass"
SPOOL_DIR = "pgdr_standby_wal"
MARK = "# --- written by pgdr restore --as-standby"


def primary_conninfo_from_env(variable: str) -> dict[str, str]:
    """The primary's connection parameters from the environment variable ``variable``."""
    value = os.environ.get(variable, "").strip()
    if not value:
        raise ConfigError(
            f"--primary-conninfo-env {variable}: the variable is not set; put the primary's "
            "connection string in it (libpq syntax)."
        )
    try:
        return {k: str(v) for k, v in conninfo_to_dict(value).items() if v is not None}
    except Exception as exc:  # psycopg.ProgrammingError: the message may quote the string
        raise ConfigError(
            f"--primary-conninfo-env {variable}: the value is not a libpq connection string."
        ) from exc


def _pgpass_field(value: str) -> str:
    return value.replace("\\", "\\\\").replace(":", "\\:")


def _quote_conf(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def configure_standby(
    data_dir: Path, params: dict[str, str], cleanup_tool: Path, owner: ServiceUser
) -> list[str]:
    """Make a restored ``data_dir`` start as a streaming standby; notes to show."""
    notes: list[str] = []
    spool = shlex.quote(str(data_dir / SPOOL_DIR))
    params = dict(params)
    password = params.pop("password", None)
    if password:
        passfile = data_dir / PASSFILE
        user = _pgpass_field(params.get("user", "*"))
        owner.write(passfile, f"*:*:*:{user}:{_pgpass_field(password)}\n")
        params["passfile"] = str(passfile)
        notes.append(f"The primary's password is in {passfile} (0600), not in the configuration.")
    lines = [
        MARK,
        f"primary_conninfo = {_quote_conf(make_conninfo(**params))}",
        f"restore_command = {_quote_conf(f'cp {spool}/%f %p')}",
        f"archive_cleanup_command = {_quote_conf(f'{shlex.quote(str(cleanup_tool))} {spool} %r')}",
        "recovery_target_timeline = 'latest'",
    ]
    owner.write(data_dir / "postgresql.auto.conf", "\n".join(lines) + "\n", append=True)
    owner.write(data_dir / "standby.signal", "")
    return notes


def _spool(archive: WalArchive, plan: PitrPlan, data_dir: Path, owner: ServiceUser) -> None:
    """The planned WAL (from the backup on, newest timeline) into the standby's spool."""
    spool = data_dir / SPOOL_DIR
    fetch_wal(archive, plan, spool)
    for path in spool.iterdir():
        owner.own(path, 0o600)
    owner.own(spool, 0o700)


def restore_as_standby(
    repo: Repository,
    backup_id: str,
    to: Path,
    conninfo_env: str,
    *,
    force: bool = False,
    progress: Callable[[int], None] | None = None,
    workers: int | None = None,
) -> RestoreResult:
    """Restore ``backup_id`` into ``to`` configured as a standby of the server in ``conninfo_env``.

    The variable is read and the WAL planned (the backup's WAL present, nothing the repository
    lost) before anything is written; if spooling or configuring fails, the restored directory
    is removed again.
    """
    params = primary_conninfo_from_env(conninfo_env)
    archive = repository_archive(repo)
    plan = plan_pitr(repo, archive, Target("latest"), backup_id=backup_id)
    # only complete segments: a standby reads its archive before pg_wal, and a zero-padded
    # partial there would hide what it streamed since (on promotion: a PANIC)
    plan.segments = [(seg, partial) for seg, partial in plan.segments if not partial]
    result = restore_backup(repo, backup_id, to, force=force, progress=progress, workers=workers)
    owner = resolve_service_user(repo.settings.service_user)
    tool = installation_for_major(result.pg_major, repo.settings.pg_bin).tool("pg_archivecleanup")
    try:
        _spool(archive, plan, result.data_dir, owner)
        result.notes += configure_standby(result.data_dir, params, tool, owner)
    except BaseException:
        shutil.rmtree(result.data_dir, ignore_errors=True)
        raise
    result.notes.append(
        f"Configured as a standby: standby.signal, primary_conninfo, and {len(plan.segments)} WAL "
        f"segments from the repository in {SPOOL_DIR} to catch up from; start it to follow "
        "the primary."
    )
    return result
