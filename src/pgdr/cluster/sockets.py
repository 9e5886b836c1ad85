"""Where a local cluster's server puts its Unix-domain socket.

A socket's path must fit in ``sun_path``: 107 bytes on Linux. A cluster under a deep
``PGDR_HOME`` (a throwaway copy is ``$PGDR_HOME/scratch/compare-<backup id>-<ns>/``) cannot
put its socket in its own ``run/`` directory: the server then fails to start with "could not
create any Unix-domain sockets". Such a cluster gets a short private directory in ``/tmp``
instead, named after the cluster's path, so that every command finds it again without
recording it. ``/tmp`` is where PostgreSQL itself puts sockets by default, and it survives a
reboot only as an empty place: the directory is made again at each start.

``/tmp`` is shared, so the directory is trusted only as a real directory (not a symbolic link)
owned by pgdr's user or the service user; anything else found there is refused, naming it.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
from contextlib import suppress
from pathlib import Path

from pgdr.cluster.service_user import ServiceUser
from pgdr.core.errors import ConfigError

SOCKET_PATH_MAX = 107  # bytes of sun_path on Linux, less its terminating NUL
LONGEST_SOCKET = ".s.PGSQL.65535.lock"  # the longest name the server makes in the directory
SHORT_ROOT = Path("/tmp")  # noqa: S108 (checked as ours by prepare_short, as the docstring says)


def socket_dir_for(directory: Path) -> Path:
    """``directory/run`` (resolved), or a short ``/tmp/pgdr-<digest of directory>`` when a
    socket there would have too long a path."""
    # decided on the resolved path: every spelling of PGDR_HOME (a "..", a symbolic link)
    # makes the same choice and finds the same directory
    resolved = directory.resolve()
    if len(os.fsencode(resolved / "run" / LONGEST_SOCKET)) <= SOCKET_PATH_MAX:
        return resolved / "run"
    digest = hashlib.sha256(os.fsencode(resolved)).hexdigest()[:24]
    return SHORT_ROOT / f"pgdr-{digest}"


def is_short(socket_dir: Path, directory: Path) -> bool:
    """Whether ``socket_dir`` lies outside the cluster's ``directory`` (a short one)."""
    return socket_dir.parent != directory.resolve()


def _ours(socket_dir: Path, user: ServiceUser) -> bool:
    """Whether ``socket_dir`` is a real directory of pgdr's user or of ``user``."""
    try:
        info = socket_dir.lstat()
    except FileNotFoundError:
        return False
    return stat.S_ISDIR(info.st_mode) and info.st_uid in (os.geteuid(), user.uid)


def prepare_short(socket_dir: Path, directory: Path, user: ServiceUser) -> None:
    """Make (or take back) the short socket directory of the cluster in ``directory``: a real
    directory owned by pgdr's user or ``user``, given to ``user`` with mode 0700."""
    with suppress(FileExistsError):
        socket_dir.mkdir(mode=0o700)
    if not _ours(socket_dir, user):
        raise ConfigError(
            f"{socket_dir}, the socket directory of the cluster at {directory} (whose own path "
            "is too long for a socket), is not a directory of pgdr's user or of the service "
            "user; remove it, or set PGDR_HOME to a shorter path."
        )
    user.own(socket_dir, 0o700)


def check_short(socket_dir: Path, directory: Path, user: ServiceUser) -> None:
    """Before showing a URL through ``socket_dir``: a short one that is missing (``/tmp`` was
    emptied) or not pgdr's could be anyone's server."""
    if is_short(socket_dir, directory) and not _ours(socket_dir, user):
        raise ConfigError(
            f"The socket directory {socket_dir} of the cluster at {directory} is missing or not "
            "pgdr's, so a URL through it could reach another user's server; start the cluster "
            "(it makes the directory again), or use --tcp."
        )


def remove_short(socket_dir: Path, directory: Path, user: ServiceUser) -> None:
    """Remove the short socket directory of a destroyed cluster (nothing for ``run/``); one
    that is not pgdr's or ``user``'s is left alone."""
    if is_short(socket_dir, directory) and _ours(socket_dir, user):
        shutil.rmtree(socket_dir, ignore_errors=True)
