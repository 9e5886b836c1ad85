"""The server's processes as ``/proc`` shows them: is a PID alive, is it our postmaster.

A ``postmaster.pid`` proves nothing by itself (a crash leaves it behind, and its PID may since
belong to another program): a PID counts as the cluster's server only when it is a live, not
zombie, ``postgres`` whose working directory is the data directory. A process of another user
that cannot be inspected is assumed to be ours, so a running server is never taken for stale.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

PROBE_TIMEOUT_S = 1.0
# a connection refused, or to nothing there (no socket file, an address this host lacks)
NOTHING_THERE = frozenset(
    (errno.ENOENT, errno.ECONNREFUSED, errno.EADDRNOTAVAIL, errno.ENETUNREACH, errno.EAFNOSUPPORT)
)


def pid_alive(pid: int) -> bool:
    """Whether ``pid`` is a live (not zombie) process, whoever owns it."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return Path(f"/proc/{pid}").exists() and "zombie" not in _proc_state(pid)


def _children_of(pid: int) -> list[int]:
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid:
            children.append(int(stat.parent.name))
    return children


def _proc_state(pid: int) -> str:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("State:"):
                return line.lower()
    except OSError:
        return ""
    return ""


def is_postgres_for(pid: int, data_dir: Path) -> bool:
    """Whether ``pid`` is a live postgres whose working directory is ``data_dir``."""
    if not pid_alive(pid):
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0]
        cwd = Path(f"/proc/{pid}/cwd").readlink()
    except OSError:
        return True  # cannot inspect (another user's process): assume it is ours
    return cmdline.endswith(b"postgres") and cwd.resolve() == data_dir.resolve()


def _pid_file(pid_file: Path) -> tuple[int, list[bytes]] | None:
    """The PID on the first line of ``postmaster.pid`` (negated by a single-user backend) and
    all its lines, read as bytes (its data directory need not be UTF-8); None when missing or
    unreadable."""
    try:
        lines = pid_file.read_bytes().split(b"\n")
        return int(lines[0]), lines
    except (OSError, ValueError):
        return None


def _pid_in(pid_file: Path) -> int | None:
    """The PID on the first line of ``postmaster.pid``; None when missing or unreadable."""
    found = _pid_file(pid_file)
    return None if found is None else found[0]


def server_on(data_dir: Path) -> str | None:
    """Why a server seems to run on ``data_dir`` (a phrase), or None.

    The process its ``postmaster.pid`` names is alive here (a negative pid is a single-user
    backend's); or, that process not being one this PID namespace can see, the Unix socket or
    the TCP port the file names accepts a connection, or cannot be told not to. That finds a
    server in a container that shares this host's network, or has its socket directory mounted
    at the same path; one that shares neither is out of reach. A server that took the port
    since this one crashed is refused all the same, and the phrase says which.
    """
    found = _pid_file(data_dir / "postmaster.pid")
    if found is None:
        return None
    pid, lines = abs(found[0]), found[1]
    if pid_alive(pid):
        return f"pid {pid}"
    fields = [*lines[3:6], b"", b"", b""]  # port, socket directory, first listen address
    port, socket_dir, listen = (f.strip().decode(errors="surrogateescape") for f in fields[:3])
    if not port.isdigit():
        return None
    answering = _answering(int(port), socket_dir, listen)
    if answering is None:
        return None
    return (
        f"{answering}, which its postmaster.pid names, though pid {pid} is no process here (a "
        "server in another PID namespace, or another server on that port)"
    )


def _answering(port: int, socket_dir: str, listen: str) -> str | None:
    """The socket or port (of the first listen address) that accepts a connection or cannot
    be told not to, as a phrase; None when each is refused or absent."""
    if socket_dir:
        path = f"{socket_dir}/.s.PGSQL.{port}"
        address = "\0" + path[1:] if path.startswith("@") else path  # "@": an abstract socket
        found = _probe(partial(_connect_unix, address), f"its socket {path}")
        if found is not None:
            return found
    if listen:
        host = _reachable(listen)
        return _probe(partial(_connect_tcp, host, port), f"port {port} of {host}")
    return None


def _connect_unix(address: str) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(PROBE_TIMEOUT_S)
        probe.connect(address)


def _connect_tcp(host: str, port: int) -> None:
    socket.create_connection((host, port), timeout=PROBE_TIMEOUT_S).close()


def _probe(connect: Callable[[], None], what: str) -> str | None:
    """``what`` accepts connections, cannot be told not to, or (None) is refused or absent."""
    try:
        connect()
    except socket.gaierror:
        return None  # a listen address this host cannot resolve: nothing to reach here
    except OSError as exc:
        if exc.errno in NOTHING_THERE:
            return None
        return f"{what} cannot be told not to accept connections ({exc.strerror or exc})"
    except (ValueError, OverflowError) as exc:
        return f"{what} cannot be probed ({exc})"
    return f"{what} accepts connections"


def _reachable(listen: str) -> str:
    """Where to reach a server listening on ``listen`` (a wildcard: the loopback address)."""
    if listen == "*":
        return "127.0.0.1"
    try:
        address = ipaddress.ip_address(listen)
    except ValueError:
        return listen  # a host name
    if address.is_unspecified:
        return "::1" if address.version == 6 else "127.0.0.1"
    return listen


def running_postmaster(data_dir: Path) -> int | None:
    """The PID of the server running on ``data_dir``, or None."""
    pid = _pid_in(data_dir / "postmaster.pid")
    return pid if pid is not None and is_postgres_for(pid, data_dir) else None


def move_stale_pid_file(data_dir: Path) -> str | None:
    """Move aside a postmaster.pid left by a crash when its PID is not our server; a note
    saying so, or None when there was nothing to move."""
    pid_file = data_dir / "postmaster.pid"
    if not pid_file.exists():
        return None
    found = _pid_in(pid_file)
    pid = -1 if found is None else found
    if pid > 0 and is_postgres_for(pid, data_dir):
        return None
    aside = pid_file.with_name(f"postmaster.pid.stale-{int(time.time())}")
    pid_file.rename(aside)
    return f"Moved a stale postmaster.pid (PID {pid} is not running) to {aside.name}."


def kill_postmaster(pid: int) -> None:
    """SIGKILL the postmaster, then wait (up to 30 s) until it is reaped and its backends have
    noticed its death: until then a new postmaster refuses the lock files and the shared
    memory they still hold."""
    children = _children_of(pid)
    os.kill(pid, 9)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and any(
        Path(f"/proc/{p}").exists() for p in (pid, *children)
    ):
        time.sleep(0.05)
