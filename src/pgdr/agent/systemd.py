"""``pgdr agent install --systemd``: the unit file that keeps the agent running.

The unit restarts the agent whatever happened (``Restart=always``), stops it with SIGTERM (the
streamer flushes, a running job gets ``TimeoutStopSec``), and confines it: no new privileges,
a read-only system except ``PGDR_HOME``, private /tmp, no access to home directories, and
kernel tunables, modules and control groups off limits. Secrets come from an
``EnvironmentFile`` only root can read, never from the unit itself. An existing unit is never
overwritten without ``--force``.
"""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from pgdr.core.errors import ConfigError, RuntimeFailure

UNIT_PATH = Path("/etc/systemd/system/pgdr-agent.service")
ENVIRONMENT_FILE = Path("/etc/pgdr/agent.env")


@dataclass(frozen=True)
class UnitOptions:
    home: Path
    config: Path | None
    database: str | None
    serve: bool
    user: str = "root"


def pgdr_command() -> str:
    """How systemd starts this pgdr: its console script, else this interpreter with -m."""
    found = shutil.which("pgdr")
    return found if found else f"{sys.executable} -m pgdr"


def unit_text(options: UnitOptions) -> str:
    args = ["agent"]
    if options.config is not None:
        args += ["--config", str(options.config)]
    if options.database:
        args += ["--db", options.database]
    if options.serve:
        args.append("--serve")
    return f"""[Unit]
Description=pgdr agent: WAL streaming, backups, restore tests and checks
Wants=network-online.target
After=network-online.target postgresql.service

[Service]
Type=simple
User={options.user}
Environment=PGDR_HOME={options.home}
EnvironmentFile=-{ENVIRONMENT_FILE}
ExecStart={pgdr_command()} {" ".join(args)}
Restart=always
RestartSec=5
KillSignal=SIGTERM
TimeoutStopSec=60
NoNewPrivileges=yes
ProtectSystem=strict
ReadWritePaths={options.home}
ProtectHome=yes
PrivateTmp=yes
PrivateDevices=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectControlGroups=yes
RestrictSUIDSGID=yes
LockPersonality=yes
UMask=0077

[Install]
WantedBy=multi-user.target
"""


def install_unit(text: str, path: Path = UNIT_PATH, force: bool = False) -> Path:
    """Write the unit (0644); refuses to replace an existing one without ``force``."""
    if path.exists() and not force:
        raise ConfigError(f"{path} already exists; pass --force to replace it.")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        tmp.write_text(text)
        tmp.chmod(0o644)
        tmp.replace(path)
    except OSError as exc:
        raise RuntimeFailure(f"Cannot write {path}: {exc.strerror}.") from exc
    return path
