"""``pgdr wal setup``: the server settings each WAL mode needs, printed or applied.

Streaming (recommended) needs only replication settings and a slot: pg_receivewal is a client,
so nothing runs inside the server's OS account. Archiving runs ``pgdr wal push %p`` as the
server's OS user, which must be able to execute pgdr, read the key file and write the
repository; ``--apply`` checks that and refuses with one sentence when it cannot.
"""

from __future__ import annotations

import os
import shlex
import shutil
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pgdr.cluster.service_user import ServiceUser
from pgdr.core import runner
from pgdr.core.errors import ConfigError, PgdrError
from pgdr.wal.server import DEFAULT_SLOT, connect, ensure_slot, set_system


@dataclass
class Change:
    name: str
    current: str | None
    wanted: str
    why: str
    needs_restart: bool = False

    @property
    def ok(self) -> bool:
        return self.current == self.wanted


@dataclass
class SetupPlan:
    mode: str
    changes: list[Change] = field(default_factory=list)
    slot: str | None = None
    slot_exists: bool = False
    notes: list[str] = field(default_factory=list)
    applied: bool = False
    restart_needed: bool = False

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["changes"] = [asdict(c) | {"ok": c.ok} for c in self.changes]
        return data


def pgdr_executable() -> Path:
    """The absolute path of the pgdr program in use (archive_command needs it)."""
    candidate = Path(sys.argv[0])
    if candidate.name == "pgdr" and candidate.is_file():
        return candidate.resolve()
    found = shutil.which("pgdr") or str(Path(sys.executable).with_name("pgdr"))
    return Path(found).resolve()


def archive_command(executable: Path, env: dict[str, str]) -> str:
    assignments = " ".join(f"{k}={shlex.quote(v)}" for k, v in sorted(env.items()))
    return f"{assignments} {shlex.quote(str(executable))} wal push %p".strip()


SETTINGS = [
    "wal_level",
    "max_wal_senders",
    "max_replication_slots",
    "archive_mode",
    "archive_command",
    "archive_timeout",
    "summarize_wal",
    "max_slot_wal_keep_size",
]


def plan_setup(
    conninfo: str,
    mode: str,
    archive_env: dict[str, str] | None = None,
    slot: str = DEFAULT_SLOT,
) -> SetupPlan:
    """The changes ``mode`` needs, read from the server; nothing is changed."""
    if mode not in ("stream", "archive"):
        raise ConfigError(f"Unknown WAL mode {mode!r}: use stream or archive.")
    plan = SetupPlan(mode=mode)
    with connect(conninfo) as conn:
        rows = conn.execute(
            "SELECT name, setting, context FROM pg_settings WHERE name = ANY(%s)", (SETTINGS,)
        ).fetchall()
        current = {str(r[0]): str(r[1]) for r in rows}
        major_row = conn.execute("SELECT current_setting('server_version_num')::int").fetchone()
        assert major_row is not None
        major = int(major_row[0]) // 10000
        if plan.mode == "stream":
            plan.slot = slot
            plan.slot_exists = (
                conn.execute(
                    "SELECT 1 FROM pg_replication_slots WHERE slot_name = %s", (slot,)
                ).fetchone()
                is not None
            )
    plan.changes += _sender_changes(current)
    if mode == "stream":
        _plan_stream(plan, current)
    else:
        plan.changes += _archive_changes(current, archive_env or {})
    if major >= 17:
        plan.changes.append(
            Change("summarize_wal", current.get("summarize_wal"), "on", "incremental backups")
        )
    return plan


def _sender_changes(current: dict[str, str]) -> list[Change]:
    """What both modes need: WAL fit for recovery, and WAL senders for pgdr's clients."""
    wal_level = current.get("wal_level", "replica")
    senders = int(current.get("max_wal_senders", "0"))
    return [
        Change(
            "wal_level",
            wal_level,
            wal_level if wal_level in ("replica", "logical") else "replica",
            "WAL must carry enough to rebuild the database",
            needs_restart=True,
        ),
        Change(
            "max_wal_senders",
            str(senders),
            str(max(senders, 4)),
            "pg_receivewal and pg_basebackup are WAL senders",
            needs_restart=True,
        ),
    ]


def _plan_stream(plan: SetupPlan, current: dict[str, str]) -> None:
    """Streaming: a replication slot to spare, and what to know about the slot's WAL."""
    slots = int(current.get("max_replication_slots", "0"))
    plan.changes.append(
        Change(
            "max_replication_slots",
            str(slots),
            str(max(slots, 2)),
            "the pgdr slot keeps WAL until it is safe",
            needs_restart=True,
        )
    )
    keep = current.get("max_slot_wal_keep_size", "-1")
    if keep != "-1":
        plan.notes.append(
            f"max_slot_wal_keep_size is {keep} MB: if the streamer is down longer than that "
            "much WAL, the server drops the slot's WAL and the chain has a gap."
        )
    plan.notes.append(
        "`pgdr wal stream --synchronous` sets synchronous_standby_names itself once "
        "connected; commits then wait for pgdr (see docs/point-in-time-recovery.md)."
    )


def _archive_changes(current: dict[str, str], archive_env: dict[str, str]) -> list[Change]:
    """Archiving: ``pgdr wal push %p`` as the archive_command, at least once a minute."""
    command = archive_command(pgdr_executable(), archive_env)
    return [
        Change("archive_mode", current.get("archive_mode"), "on", "", needs_restart=True),
        Change("archive_command", current.get("archive_command"), command, "pgdr wal push"),
        Change(
            "archive_timeout",
            current.get("archive_timeout"),
            "60",
            "a quiet server still archives at least once a minute (RPO 1 min)",
        ),
    ]


def check_archive_reachable(user: ServiceUser, env: dict[str, str], executable: Path) -> None:
    """Refuse when the server's OS user cannot run pgdr, read the key or write the repo."""
    # Run it for real: a script can be reachable while its interpreter (e.g. under /root) is not.
    try:
        probe = user.run([str(executable), "version"], timeout=60)
        reason = runner.last_line(probe.stderr or probe.stdout) if probe.returncode else ""
    except PgdrError as exc:
        reason = exc.message
    if reason:
        raise ConfigError(
            f"The server's OS user {user.name!r} cannot run {executable} ({reason}); "
            "archive_command runs as that user: install pgdr where it can, or use "
            "`pgdr wal stream`."
        )
    key_file = env.get("PGDR_ENCRYPTION_KEY_FILE")
    if key_file and user.run(["test", "-r", key_file]).returncode != 0:
        raise ConfigError(
            f"The server's OS user {user.name!r} cannot read the key file {key_file}; give it "
            "a copy it can read (mode 0400), or use `pgdr wal stream`."
        )
    repo = env.get("PGDR_REPO", "")
    if repo and "://" not in repo and user.run(["test", "-w", repo]).returncode != 0:
        raise ConfigError(
            f"The server's OS user {user.name!r} cannot write the repository {repo}; "
            "use `pgdr wal stream`, which needs no access from the server."
        )


def apply_setup(conninfo: str, plan: SetupPlan) -> SetupPlan:
    with connect(conninfo) as conn:
        for change in plan.changes:
            if not change.ok:
                set_system(conn, change.name, change.wanted)
                if change.needs_restart:
                    plan.restart_needed = True
        pending = conn.execute("SELECT name FROM pg_settings WHERE pending_restart").fetchall()
        plan.restart_needed = plan.restart_needed and bool(pending)
    if plan.slot is not None:
        ensure_slot(conninfo, plan.slot)
        plan.slot_exists = True
    plan.applied = True
    return plan


def patroni_slots(slot: str = DEFAULT_SLOT) -> dict[str, Any]:
    """The Patroni DCS settings that keep pgdr's slot on every node (``pgdr wal setup --patroni``).

    Patroni drops physical slots it does not know on the primary; a permanent slot is created
    on every member and advanced on the replicas, so a new primary has it at a position at or
    before the streamer's and the streamer continues there after a failover.
    """
    return {"slots": {slot: {"type": "physical"}}}


def patroni_yaml(slot: str = DEFAULT_SLOT) -> str:
    """:func:`patroni_slots` as YAML for ``bootstrap.dcs`` or ``patronictl edit-config``."""
    return (
        "# Patroni: under bootstrap.dcs in patroni.yml, or `patronictl edit-config`\n"
        f"slots:\n  {slot}:\n    type: physical\n"
    )


def default_archive_env(repo_url: str, home: Path) -> dict[str, str]:
    env = {"PGDR_REPO": repo_url, "PGDR_HOME": str(home)}
    key_file = os.environ.get("PGDR_ENCRYPTION_KEY_FILE")
    env["PGDR_ENCRYPTION_KEY_FILE"] = key_file or str(home / "keys" / "master.key")
    return env
