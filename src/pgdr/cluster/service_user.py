"""The unprivileged OS user that PostgreSQL server processes run as.

PostgreSQL refuses to run as root. When pgdr itself runs as root it runs initdb, pg_ctl and the
server as ``PGDR_SERVICE_USER`` (default ``postgres``, created as a system user when missing) and
makes sure that user can reach the binaries and directories involved; as any other user it runs
them as itself.
"""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import stat
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pgdr.core import runner
from pgdr.core.errors import ConfigError, RuntimeFailure


@dataclass(frozen=True)
class ServiceUser:
    """Who server processes run as; ``switch`` is False when that is the current user."""

    name: str
    uid: int
    gid: int
    switch: bool

    def run(
        self,
        args: Sequence[str | Path],
        *,
        timeout: float | None = None,
        env: dict[str, str] | None = None,
        check: bool = False,
    ) -> subprocess.CompletedProcess[str]:
        """Run a program as this user, capturing its output (``pgdr.core.runner``)."""
        return runner.run(
            args,
            timeout_s=timeout,
            env=env,
            check=check,
            cwd=Path("/"),
            as_user=(self.uid, self.gid) if self.switch else None,
        )

    def can_reach(self, path: Path) -> bool:
        """Whether this user can traverse to and read/execute ``path``."""
        if not self.switch:
            return os.access(path, os.R_OK | os.X_OK)
        return self.run(["test", "-r", str(path), "-a", "-x", str(path)]).returncode == 0

    def own(self, path: Path, mode: int) -> None:
        """Give ``path`` (a regular file or a directory, never through a symbolic link) to this
        user with ``mode`` (a no-op owner change when not switching)."""
        kind = path.lstat().st_mode
        if not (stat.S_ISREG(kind) or stat.S_ISDIR(kind)):
            raise RuntimeFailure(f"Cannot give {path} to {self.name}: it is not a regular file.")
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            if self.switch:
                os.fchown(fd, self.uid, self.gid)
            os.fchmod(fd, mode)
        finally:
            os.close(fd)

    def write(
        self, path: Path, text: str, mode: int = 0o600, *, append: bool = False, new: bool = False
    ) -> None:
        """Write ``text`` to ``path`` in a directory this user controls (a data directory, its
        socket directory), and give the file to this user with ``mode``. Never through what
        that user may have put there: a symbolic link (``O_NOFOLLOW``: root wrote the
        superuser's password through one, over any file it named) or anything but a regular
        file (a FIFO is opened without blocking and refused) or a file with another name
        elsewhere (a hard link to a file the user could write, then taken whole). ``new``: the
        file must not exist yet."""
        flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
        flags |= os.O_EXCL if new else 0
        try:
            fd = os.open(path, flags | (os.O_APPEND if append else 0), mode)
        except OSError as exc:
            raise RuntimeFailure(
                f"Cannot write {path}: {exc.strerror or exc} (is it a symbolic link or a "
                "special file someone put there?)."
            ) from exc
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1:
                raise RuntimeFailure(
                    f"Cannot write {path}: it is not a regular file of its own (a special "
                    "file, or a hard link to another)."
                )
            if not append:
                os.ftruncate(fd, 0)  # once it is known to be ours to rewrite
            os.write(fd, text.encode())
            if self.switch:
                os.fchown(fd, self.uid, self.gid)
            os.fchmod(fd, mode)
        finally:
            os.close(fd)


def _create_system_user(name: str) -> None:
    useradd = shutil.which("useradd")
    if useradd is None:
        raise ConfigError(
            f"The OS user {name!r} does not exist and useradd is not available to create it; "
            "create it or set PGDR_SERVICE_USER to an existing unprivileged user."
        )
    result = runner.run(
        [useradd, "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
        check=False,
    )
    if result.returncode not in (0, 9):  # 9: created meanwhile by someone else
        raise RuntimeFailure(f"Could not create the OS user {name!r}: {result.stderr.strip()}.")


def resolve_service_user(name: str) -> ServiceUser:
    """The user to run servers as, creating ``name`` when pgdr is root and it is missing."""
    if os.geteuid() != 0:
        entry = pwd.getpwuid(os.geteuid())
        return ServiceUser(entry.pw_name, entry.pw_uid, entry.pw_gid, switch=False)
    if name == "root":
        raise ConfigError("PGDR_SERVICE_USER must not be root: PostgreSQL refuses to run as root.")
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        _create_system_user(name)
        entry = pwd.getpwnam(name)
    # Verify the group exists; a dangling gid would make every chown fail later.
    try:
        grp.getgrgid(entry.pw_gid)
    except KeyError as exc:
        raise ConfigError(f"The OS user {name!r} has a primary group that does not exist.") from exc
    return ServiceUser(entry.pw_name, entry.pw_uid, entry.pw_gid, switch=True)
