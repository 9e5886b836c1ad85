"""The life of one local cluster: create, start, status, stop, destroy, connect.

A cluster lives in one directory::

    <dir>/cluster.json   what pgdr knows of it (binaries, port, version), root-only
    <dir>/password       the superuser's password for TCP connections, 0600
    <dir>/data/          PGDATA, owned by the service user
    <dir>/run/           the unix socket directory, owned by the service user (a short
                         /tmp/pgdr-<digest> instead when <dir> is too deep for a socket's
                         path: ``pgdr.cluster.sockets``)
    <dir>/server.log     the server's log

Local (socket) connections use ``trust``, guarded by the socket directory's 0700 mode; TCP
connections on 127.0.0.1 need the generated password (SCRAM). pgdr itself always uses the socket.
"""

from __future__ import annotations

import json
import os
import secrets
import shlex
import shutil
import subprocess
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from pgdr.cluster.installation import PgInstallation, choose_installation
from pgdr.cluster.ports import find_free_port, port_in_use
from pgdr.cluster.processes import (
    kill_postmaster,
    move_stale_pid_file,
    pid_alive,
    running_postmaster,
)
from pgdr.cluster.runtime import RUNTIME, reachable_installation, runtime_lock
from pgdr.cluster.service_user import ServiceUser, resolve_service_user
from pgdr.cluster.sockets import (
    check_short,
    is_short,
    prepare_short,
    remove_short,
    socket_dir_for,
)
from pgdr.config.settings import PgdrSettings
from pgdr.core.errors import ConfigError, RuntimeFailure
from pgdr.core.runner import last_line

__all__ = [  # pid_alive lives in cluster.processes; backup and restore import it from here
    "BASE_CONFIG",
    "DEFAULT_CLUSTER",
    "START_TIMEOUT_S",
    "SUPERUSER",
    "ClusterStatus",
    "LocalCluster",
    "default_cluster",
    "ensure_home",
    "named_cluster",
    "pid_alive",
    "refuse_links",
]

SUPERUSER = "postgres"
DEFAULT_CLUSTER = "default"
START_TIMEOUT_S = 120

BASE_CONFIG = """
# --- written by pgdr ---
listen_addresses = '127.0.0.1'
port = {port}
unix_socket_directories = '{socket_dir}'
unix_socket_permissions = 0700
wal_level = replica
max_wal_senders = 10
max_replication_slots = 10
wal_keep_size = '256MB'
fsync = on
log_line_prefix = '%m [%p] '
include_if_exists = 'pgdr.conf'
"""


@dataclass(frozen=True)
class ClusterStatus:
    """What ``pgdr db status`` reports."""

    name: str
    exists: bool
    running: bool
    pid: int | None
    port: int | None
    version: str | None
    data_dir: str
    socket_dir: str
    bin_dir: str | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def refuse_links(directory: Path) -> None:
    """A cluster directory that has become a symbolic link is not removed through it (one
    sentence, exit 2, before the server is stopped), nor followed."""
    if directory.is_symlink():
        raise ConfigError(
            f"{directory} is a symbolic link (to {directory.resolve()}), not a directory pgdr "
            "made; nothing was changed: remove it by hand."
        )


def ensure_home(home: Path) -> Path:
    """Create ``PGDR_HOME`` if needed; a clear error when it cannot be created or written."""
    try:
        home.mkdir(parents=True, exist_ok=True)
        probe = home / f".write-test-{os.getpid()}"
        probe.touch()
        probe.unlink()
    except OSError as exc:
        raise ConfigError(
            f"PGDR_HOME {home} is not usable: {exc.strerror or exc}; "
            "set PGDR_HOME to a writable directory."
        ) from exc
    if os.geteuid() == 0:
        # The service user must be able to traverse to its clusters.
        home.chmod(home.stat().st_mode | 0o711)
    return home


class LocalCluster:
    """A PostgreSQL cluster pgdr runs itself, in its own directory."""

    def __init__(
        self,
        directory: Path,
        settings: PgdrSettings,
        name: str | None = None,
        data_dir: Path | None = None,
    ) -> None:
        self.directory = directory
        self.name = name or directory.name
        self.settings = settings
        # A restored data directory may live elsewhere (``pgdr restore --to DIR --start``).
        self.data_dir = data_dir or directory / "data"
        self.socket_dir = socket_dir_for(directory)
        self.log_file = directory / "server.log"
        self.meta_file = directory / "cluster.json"
        self.password_file = directory / "password"
        self._user: ServiceUser | None = None

    # ----- metadata -------------------------------------------------------------------------
    @property
    def exists(self) -> bool:
        return self.meta_file.is_file() and (self.data_dir / "PG_VERSION").is_file()

    def _meta(self) -> dict[str, Any]:
        if not self.meta_file.is_file():
            raise RuntimeFailure(
                f"There is no cluster {self.name!r} at {self.directory}; create it with "
                "`pgdr db start`."
            )
        data: dict[str, Any] = json.loads(self.meta_file.read_text())
        return data

    def _write_meta(self, meta: dict[str, Any]) -> None:
        tmp = self.meta_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(meta, indent=2))
        tmp.chmod(0o600)
        tmp.replace(self.meta_file)

    @property
    def port(self) -> int:
        return int(self._meta()["port"])

    @property
    def installation(self) -> PgInstallation:
        meta = self._meta()
        return PgInstallation(
            Path(meta["bin_dir"]), int(meta["major"]), str(meta["version"]), str(meta["source"])
        )

    @property
    def user(self) -> ServiceUser:
        if self._user is None:
            self._user = resolve_service_user(self.settings.service_user)
        return self._user

    # ----- connection strings ---------------------------------------------------------------
    def conninfo(self, dbname: str = "postgres") -> str:
        """libpq URL over the unix socket, needing no password."""
        return (
            f"postgresql://{SUPERUSER}@/{quote(dbname)}"
            f"?host={quote(str(self.socket_dir), safe='')}&port={self.port}"
        )

    def checked_conninfo(self, dbname: str = "postgres") -> str:
        """:meth:`conninfo` to show a person, once its socket directory is known to be pgdr's."""
        check_short(self.socket_dir, self.directory, self.user)
        return self.conninfo(dbname)

    def tcp_url(self, dbname: str = "postgres", with_password: bool = False) -> str:
        secret = ""
        if with_password:
            secret = ":" + quote(self.password_file.read_text().strip(), safe="")
        return f"postgresql://{SUPERUSER}{secret}@127.0.0.1:{self.port}/{quote(dbname)}"

    # ----- lifecycle ------------------------------------------------------------------------
    def create(
        self,
        installation: PgInstallation | None = None,
        port: int | None = None,
        checksums: bool = True,
        extra_config: str = "",
    ) -> None:
        """initdb a new cluster; refuses to touch an existing one."""
        if self.exists:
            raise ConfigError(f"Cluster {self.name!r} already exists at {self.directory}.")
        if self.data_dir.exists() and any(self.data_dir.iterdir()):
            raise ConfigError(
                f"{self.data_dir} is not empty and holds no pgdr cluster; move it away first."
            )
        home = ensure_home(self.settings.home)
        inst = installation or choose_installation(self.settings.pg_bin, self.settings.pg_version)
        with runtime_lock(home, exclusive=False):  # a staged copy stays until recorded below
            inst = reachable_installation(inst, self.user, home / RUNTIME)
            port = port or find_free_port()
            self._prepare_directories(self.data_dir, self.socket_dir)
            self._initdb(inst, checksums)
            self._append_config(
                BASE_CONFIG.format(port=port, socket_dir=self.socket_dir) + extra_config
            )
            self._record(inst, port, checksums=checksums)

    def adopt(
        self,
        installation: PgInstallation,
        port: int | None = None,
        options: dict[str, str] | None = None,
    ) -> None:
        """Take over a data directory put in place by someone else (a restore), ready to start.

        The data directory's configuration is left as it is: pgdr's settings (port, socket
        directory, ``listen_addresses`` and ``options``) are recorded in ``cluster.json`` and
        given on the server's command line at each start, so the directory still starts with
        its own configuration under a plain ``pg_ctl``.
        """
        if not (self.data_dir / "PG_VERSION").is_file():
            raise RuntimeFailure(f"{self.data_dir} is not a PostgreSQL data directory.")
        server_options = {
            "listen_addresses": "127.0.0.1",
            "unix_socket_directories": str(self.socket_dir),
            "unix_socket_permissions": "0700",
            **(options or {}),
        }
        with runtime_lock(self.settings.home, exclusive=False):
            inst = reachable_installation(installation, self.user, self.settings.home / RUNTIME)
            port = port or find_free_port()
            self._prepare_directories(self.socket_dir)
            self._chown_tree(self.data_dir)
            self._record(
                inst, port, adopted=True, data_dir=str(self.data_dir), server_options=server_options
            )

    def _record(self, inst: PgInstallation, port: int, **extra: Any) -> None:
        self._write_meta(
            {
                "name": self.name,
                "bin_dir": str(inst.bin_dir),
                "major": inst.major,
                "version": inst.version,
                "source": inst.source,
                "port": port,
                "created_at": time.time(),
                **extra,
            }
        )

    def _chown_tree(self, root: Path) -> None:
        if not self.user.switch:
            return
        for path in [root, *root.rglob("*")]:
            os.lchown(path, self.user.uid, self.user.gid)
        root.chmod(0o700)

    def _prepare_directories(self, *private: Path) -> None:
        """The cluster directory (others may traverse it), the ``private`` directories (the
        service user's, 0700) and the server's log file (0600)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        self.directory.chmod(0o711)
        for path in private:
            if path == self.socket_dir and is_short(path, self.directory):
                prepare_short(path, self.directory, self.user)
                continue
            path.mkdir(exist_ok=True)
            self.user.own(path, 0o700)
        self.log_file.touch()
        self.user.own(self.log_file, 0o600)

    def _initdb(self, inst: PgInstallation, checksums: bool) -> None:
        password = secrets.token_urlsafe(24)
        self.password_file.write_text(password + "\n")
        self.password_file.chmod(0o600)
        # initdb reads the password from a file the service user can read; it is removed at once.
        pwfile = self.socket_dir / "initdb.pw"
        pwfile.unlink(missing_ok=True)  # whatever the service user left there (a link) goes
        self.user.write(pwfile, password + "\n", new=True)
        try:
            args: list[str | Path] = [
                inst.tool("initdb"),
                "-D",
                self.data_dir,
                "-U",
                SUPERUSER,
                "--pwfile",
                pwfile,
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "--encoding=UTF8",
                "--locale=C",
            ]
            if checksums:
                args.append("--data-checksums")
            elif inst.major >= 18:
                args.append("--no-data-checksums")
            result = self.user.run(args, timeout=300)
        finally:
            pwfile.unlink(missing_ok=True)
        if result.returncode != 0:
            raise RuntimeFailure(f"initdb failed: {last_line(result.stderr)}")

    def _append_config(self, text: str) -> None:
        self.user.write(self.data_dir / "postgresql.conf", text, append=True)

    def set_config(self, text: str) -> None:
        """Replace pgdr's own include file (``pgdr.conf``); takes effect on restart/reload."""
        self.user.write(self.data_dir / "pgdr.conf", text)

    def set_port(self, port: int) -> None:
        meta = self._meta()
        meta["port"] = port
        if "server_options" not in meta:
            self._append_config(f"port = {port}\n")
        self._write_meta(meta)

    def drop_server_options(self, names: Iterable[str]) -> list[str]:
        """Stop giving the server the options ``names`` when pgdr starts it: from its next
        start on, its own configuration decides them. Returns those it was given."""
        meta = self._meta()
        options: dict[str, str] = meta.get("server_options") or {}
        dropped = [name for name in names if name in options]
        for name in dropped:
            del options[name]
        if dropped:
            self._write_meta(meta)
        return dropped

    def start(self, timeout: float = START_TIMEOUT_S) -> list[str]:
        """Start the server and wait until it accepts connections; returns notes to show."""
        notes: list[str] = []
        if self.status().running:
            return notes
        if port_in_use(self.port):
            raise ConfigError(
                f"Port {self.port} is already in use by another program; "
                "start the cluster on another port with --port."
            )
        stale = move_stale_pid_file(self.data_dir)
        if stale:
            notes.append(stale)
        if is_short(self.socket_dir, self.directory):  # /tmp may have been emptied meanwhile
            prepare_short(self.socket_dir, self.directory, self.user)
        result = self._pg_ctl(
            "start", ["-l", self.log_file, *_server_options(self._meta())], timeout
        )
        if result.returncode != 0:
            raise RuntimeFailure(
                f"The server of cluster {self.name!r} did not start: {fatal_reason(self.log_file)}"
            )
        return notes

    def _pg_ctl(
        self, action: str, options: list[str | Path], timeout: float
    ) -> subprocess.CompletedProcess[str]:
        """``pg_ctl ACTION`` on the data directory as the service user, waiting ``timeout``."""
        return self.user.run(
            [
                self.installation.tool("pg_ctl"),
                "-D",
                self.data_dir,
                *options,
                "-w",
                "-t",
                str(int(timeout)),
                action,
            ],
            timeout=timeout + 30,
        )

    def stop(self, mode: str = "fast", timeout: float = 120) -> bool:
        """Stop the server; False when it was not running."""
        if not self.status().running:
            return False
        result = self._pg_ctl("stop", ["-m", mode], timeout)
        if result.returncode != 0:
            raise RuntimeFailure(f"pg_ctl stop failed: {last_line(result.stderr)}")
        return True

    def kill(self) -> None:
        """Crash the server on purpose (SIGKILL to the postmaster), as a drill does."""
        pid = running_postmaster(self.data_dir)
        if pid is not None:
            kill_postmaster(pid)

    def status(self) -> ClusterStatus:
        exists = self.exists
        meta = self._meta() if exists else {}
        pid = running_postmaster(self.data_dir) if exists else None
        return ClusterStatus(
            name=self.name,
            exists=exists,
            running=pid is not None,
            pid=pid,
            port=meta.get("port"),
            version=meta.get("version"),
            data_dir=str(self.data_dir),
            socket_dir=str(self.socket_dir),
            bin_dir=meta.get("bin_dir"),
        )

    def destroy(self) -> None:
        """Stop the server (immediately) and delete the whole cluster directory."""
        refuse_links(self.directory)
        if self.exists and self.status().running:
            self.stop(mode="immediate")
        shutil.rmtree(self.directory, ignore_errors=False)
        remove_short(self.socket_dir, self.directory, self.user)


def _server_options(meta: dict[str, Any]) -> list[str]:
    """``pg_ctl -o`` with pgdr's settings for an adopted cluster (pg_ctl hands the string
    to a shell, hence the quoting); nothing for a cluster pgdr created."""
    options: dict[str, str] = meta.get("server_options") or {}
    if not options:
        return []
    settings = {**options, "port": str(meta["port"])}
    return ["-o", " ".join(f"-c {shlex.quote(f'{k}={v}')}" for k, v in settings.items())]


def fatal_reason(log_file: Path) -> str:
    """Why the server stopped, from the last FATAL or PANIC line of its log."""
    try:
        lines = log_file.read_text(errors="replace").splitlines()
    except OSError:
        return "its log cannot be read."
    for line in reversed(lines):
        if "FATAL" in line or "PANIC" in line:
            return line.split(":", 3)[-1].strip() + f" (see {log_file})."
    return f"see {log_file}."


def named_cluster(settings: PgdrSettings, name: str) -> LocalCluster:
    """The cluster ``$PGDR_HOME/clusters/NAME``, with the data directory its record names."""
    if not name or "/" in name or name.startswith("."):
        raise ConfigError(f"{name!r} is not a cluster name (see `pgdr cluster list`).")
    directory = settings.home / "clusters" / name
    meta_file = directory / "cluster.json"
    try:
        meta = json.loads(meta_file.read_text())
    except FileNotFoundError:
        raise ConfigError(f"There is no cluster {name!r} (see `pgdr cluster list`).") from None
    except (OSError, ValueError) as exc:
        raise RuntimeFailure(
            f"The record of cluster {name!r} ({meta_file}) cannot be read: {exc}; if that "
            f"cluster is no longer wanted, stop its server and remove {directory} by hand."
        ) from exc
    data_dir = meta.get("data_dir")
    return LocalCluster(directory, settings, name, Path(data_dir) if data_dir else None)


def default_cluster(settings: PgdrSettings) -> LocalCluster:
    """The embedded default database, ``$PGDR_HOME/clusters/default``."""
    return LocalCluster(settings.home / "clusters" / DEFAULT_CLUSTER, settings, DEFAULT_CLUSTER)
