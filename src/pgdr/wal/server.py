"""What the WAL commands ask the database server: identity, positions, settings, the slot.

Which server is the primary is answered by :func:`resolve_primary`; :func:`primary_or_incident`
adds the incident a refused split brain opens (P0) and closes once one primary is found again.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from pgdr.core.connect import connect as core_connect
from pgdr.core.connect import hosts, redact
from pgdr.core.errors import ConfigError, RuntimeFailure
from pgdr.core.incidents import IncidentStore
from pgdr.core.runner import last_line
from pgdr.core.severity import Severity

DEFAULT_SLOT = "pgdr"
DEFAULT_APPLICATION = "pgdr"
SPLIT_BRAIN = "wal-split-brain"  # the incident's check name


class SplitBrain(RuntimeFailure):
    """Two servers accept writes on the same timeline: pgdr cannot tell which history is real."""


@dataclass(frozen=True)
class ServerInfo:
    system_identifier: int
    segment_size: int
    major: int
    timeline: int
    current_lsn: int | None  # None on a standby
    in_recovery: bool


def connect(conninfo: str, **kwargs: Any) -> psycopg.Connection[tuple[Any, ...]]:
    """A connection for the WAL commands (autocommit); one sentence naming the server on failure."""
    try:
        return core_connect(conninfo, autocommit=True, raw_errors=True, **kwargs)
    except psycopg.OperationalError as exc:
        raise RuntimeFailure(
            f"Cannot connect to {redact(conninfo)}: {last_line(str(exc))}"
        ) from exc


def server_info(conninfo: str) -> ServerInfo:
    with connect(conninfo) as conn:
        row = conn.execute(
            "SELECT (SELECT system_identifier FROM pg_control_system()),"
            " (SELECT setting::bigint FROM pg_settings WHERE name = 'wal_segment_size'),"
            " current_setting('server_version_num')::int / 10000,"
            " (SELECT timeline_id FROM pg_control_checkpoint()),"
            " pg_is_in_recovery(),"
            " CASE WHEN pg_is_in_recovery() THEN NULL"
            "      ELSE pg_current_wal_lsn() - '0/0'::pg_lsn END"
        ).fetchone()
    assert row is not None
    return ServerInfo(
        system_identifier=int(row[0]),
        segment_size=int(row[1]),
        major=int(row[2]),
        timeline=int(row[3]),
        current_lsn=int(row[5]) if row[5] is not None else None,
        in_recovery=bool(row[4]),
    )


def current_timeline(conn: psycopg.Connection[tuple[Any, ...]]) -> int:
    """The timeline the server writes now (pg_control_checkpoint lags after a promotion)."""
    row = conn.execute("SELECT substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8)").fetchone()
    assert row is not None
    return int(str(row[0]), 16)


def ensure_slot(conninfo: str, slot: str) -> bool:
    """Create the physical slot (reserving WAL now) unless it exists; True when created."""
    with connect(conninfo) as conn:
        exists = conn.execute(
            "SELECT 1 FROM pg_replication_slots WHERE slot_name = %s", (slot,)
        ).fetchone()
        if exists:
            return False
        conn.execute("SELECT pg_create_physical_replication_slot(%s, true)", (slot,))
        return True


def resolve_primary(conninfo: str) -> str:
    """A single-host connection string of the server that accepts writes now.

    A multi-host string (a Patroni cluster) is tried host by host; the answer names that one
    server, so a client program (pg_receivewal) stays on it and notices when it stops being the
    primary. Two hosts accepting writes at once (a split brain, e.g. an old primary that came
    back beside the promoted one): the one on the higher timeline wins, since the other's newest
    WAL is a branch that was left; two on the same timeline are refused (RuntimeFailure), as
    pgdr cannot tell which history is the real one. A single host is returned as given.
    """
    if len(hosts(conninfo)) < 2:
        return conninfo
    claims: list[tuple[int, str]] = []
    for one in each_host(conninfo):
        with contextlib.suppress(RuntimeFailure), connect(one) as conn:
            row = conn.execute("SELECT pg_is_in_recovery()").fetchone()
            if row is not None and not row[0]:
                claims.append((current_timeline(conn), one))
    if not claims:
        raise RuntimeFailure(f"No server among {listed_hosts(conninfo)} accepts writes now.")
    claims.sort(reverse=True)
    if len(claims) > 1 and claims[0][0] == claims[1][0]:
        both = " and ".join(server_address(c) for _t, c in claims)
        raise SplitBrain(
            f"{both} both accept writes on timeline {claims[0][0]} (a split brain): pgdr "
            "streams from neither until one of them stops being a primary."
        )
    return claims[0][1]


def primary_or_incident(conninfo: str, incidents: IncidentStore | None) -> str:
    """:func:`resolve_primary`, with the incident of a split brain in ``incidents``.

    A refused split brain opens (or keeps open) a P0 incident: writes on two servers are a
    data-loss risk (runbook: P0, data corruption), not a mere lag. The next time a single primary
    is found the incident is resolved, naming that server. Without a store, only the refusal.
    """
    try:
        server = resolve_primary(conninfo)
    except SplitBrain as exc:
        if incidents is not None:
            incidents.raise_(SPLIT_BRAIN, Severity.P0, exc.message)
        raise
    if incidents is not None and len(hosts(conninfo)) > 1:
        incidents.resolve(SPLIT_BRAIN, f"A single primary again: {server_address(server)}.")
    return server


def each_host(conninfo: str) -> list[str]:
    """One single-host connection string per host of a multi-host string, in order."""
    params = {k: v for k, v in conninfo_to_dict(conninfo).items() if v is not None}
    names = str(params.get("host") or "").split(",")
    ports = str(params.get("port") or "").split(",")
    return [
        _one_host(conninfo, name, ports[i] if i < len(ports) else ports[-1])
        for i, name in enumerate(names)
    ]


def listed_hosts(conninfo: str) -> str:
    """``host:port, ...`` of a connection string (for messages; no secrets)."""
    return ", ".join(server_address(one) for one in each_host(conninfo))


def _one_host(conninfo: str, host: str | None, port: int | str) -> str:
    params = {k: v for k, v in conninfo_to_dict(conninfo).items() if v is not None}
    params.pop("hostaddr", None)
    params.pop("target_session_attrs", None)
    params |= {"host": host or "", "port": str(port)}
    return make_conninfo("", **{k: v for k, v in params.items() if v})


def resolve_standby(conninfo: str) -> str:
    """A single-host connection string of a server in recovery (a replica) reachable now.

    A multi-host string is tried with ``target_session_attrs=standby``; a single host must be a
    standby itself. No standby reachable: one sentence (RuntimeFailure), nothing done.
    """
    listed = listed_hosts(conninfo)
    try:
        with connect(make_conninfo(conninfo, target_session_attrs="standby")) as conn:
            row = conn.execute("SELECT pg_is_in_recovery()").fetchone()
            host, port = conn.info.host, conn.info.port
    except RuntimeFailure:
        row = None
    if row is None or not row[0]:
        raise RuntimeFailure(
            f"No standby is reachable among the target's hosts ({listed}): back up from the "
            "primary (without --from standby) or bring a replica back; nothing was done."
        )
    return _one_host(conninfo, host, port)


def backup_source(conninfo: str, source: str, method: str) -> tuple[str, str]:
    """The server a base backup reads (``primary`` or ``standby``) and the method to use.

    From a standby the backup is ``pg_basebackup``'s (``stream``): the ``files`` method reads
    the primary's data directory beside it and is refused with ``--from standby``.
    """
    if source == "primary":
        return conninfo, method
    if source != "standby":
        raise ConfigError(f"--from takes primary or standby, not {source!r}.")
    if method == "files":
        raise ConfigError(
            "--from standby takes the backup with pg_basebackup (--method stream or auto); "
            "the files method reads the primary's data directory."
        )
    return resolve_standby(conninfo), "stream"


def server_address(conninfo: str) -> str:
    """``host:port`` of a single-host connection string (for messages; no secrets)."""
    params = conninfo_to_dict(conninfo)
    return f"{params.get('host') or 'local socket'}:{params.get('port') or 5432}"


def with_application_name(conninfo: str, name: str) -> str:
    return make_conninfo(conninfo, application_name=name)


def set_system(conn: psycopg.Connection[tuple[Any, ...]], name: str, value: str | None) -> None:
    """``ALTER SYSTEM SET name = value`` (RESET for None) and reload."""
    if value is None:
        conn.execute(sql.SQL("ALTER SYSTEM RESET {}").format(sql.Identifier(name)))
    else:
        conn.execute(
            sql.SQL("ALTER SYSTEM SET {} = {}").format(sql.Identifier(name), sql.Literal(value))
        )
    conn.execute("SELECT pg_reload_conf()")


def setting(conn: psycopg.Connection[tuple[Any, ...]], name: str) -> str:
    row = conn.execute("SELECT current_setting(%s)", (name,)).fetchone()
    assert row is not None
    return str(row[0])
