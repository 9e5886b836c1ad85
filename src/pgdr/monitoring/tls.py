"""The ``tls_certificate`` check: the server certificate's expiry and the key file's mode.

The certificate is read from the server's ``ssl_cert_file`` when pgdr can read that file (a
local server), otherwise from the server itself over TCP (PostgreSQL's SSLRequest, then a TLS
handshake that only reads the certificate: no credentials are sent). Severities (the runbook
names none for certificates; these follow its scale): expired, or a key file PostgreSQL would
refuse on its next start or reload (group/other may read it; root-owned 0640 allowed), is P1;
expiring within ``cert_warn_days`` is P2. ``ssl = off`` passes with that said; a certificate
pgdr cannot see is skipped with the reason, never a pass. Nothing here writes anything.
"""

from __future__ import annotations

import socket
import ssl
import stat
import struct
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import psycopg
from cryptography import x509

from pgdr.core.errors import PgdrError
from pgdr.core.severity import Severity, worst
from pgdr.monitoring.checks import CheckResult, failed, passed, skipped
from pgdr.wal.server import connect

NAME = "tls_certificate"
SSL_REQUEST = struct.pack("!II", 8, 80877103)  # PostgreSQL's SSLRequest message
TLS_SETTINGS = """
SELECT current_setting('ssl'), current_setting('ssl_cert_file'),
       current_setting('ssl_key_file'), current_setting('data_directory')
"""


@dataclass(frozen=True)
class TlsSettings:
    ssl: bool
    cert_file: Path
    key_file: Path
    host: str
    port: int


def server_certificate(host: str, port: int, timeout: float = 10) -> x509.Certificate | None:
    """The certificate the server at ``host:port`` presents, or None when it refuses TLS."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # reading the certificate, not trusting it
    with socket.create_connection((host, port), timeout=timeout) as raw:
        raw.sendall(SSL_REQUEST)
        if raw.recv(1) != b"S":
            return None
        with context.wrap_socket(raw) as tls:
            der = tls.getpeercert(binary_form=True)
    return x509.load_der_x509_certificate(der) if der else None


def read_settings(conninfo: str) -> TlsSettings:
    with connect(conninfo) as conn:
        row = conn.execute(TLS_SETTINGS).fetchone()
        host, port = conn.info.host, conn.info.port
    assert row is not None
    on, cert, key, data_dir = (str(v) for v in row)
    base = Path(data_dir)
    return TlsSettings(on == "on", base / cert, base / key, host, port)


def _certificate(tls: TlsSettings) -> tuple[x509.Certificate | None, str]:
    """The certificate and where it was read, or None and why it could not be."""
    try:
        return x509.load_pem_x509_certificate(tls.cert_file.read_bytes()), str(tls.cert_file)
    except (OSError, ValueError) as exc:
        local = f"{tls.cert_file} is not readable here ({exc})"
    if tls.host.startswith("/"):
        return None, f"{local} and the connection is a unix socket"
    try:
        return server_certificate(tls.host, tls.port), f"the server at {tls.host}:{tls.port}"
    except (OSError, ValueError) as exc:
        return None, f"{local} and the TLS handshake failed ({exc})"


def key_problem(path: Path) -> str | None:
    """Why PostgreSQL would refuse ``path`` as its key file, or None (also when not visible)."""
    try:
        info = path.stat()
    except OSError:
        return None
    mode = stat.S_IMODE(info.st_mode)
    allowed = 0o037 if info.st_uid == 0 else 0o077
    if mode & allowed:
        return f"key file {path} has mode {mode:o} (PostgreSQL refuses it on the next start)"
    return None


def check_tls(conninfo: str | None, warn_days: float = 14.0) -> CheckResult:
    if conninfo is None:
        return skipped(NAME, "no database configured")
    try:
        tls = read_settings(conninfo)
    except PgdrError as exc:
        return skipped(NAME, f"database unreachable: {exc.message}")
    except psycopg.Error as exc:
        return skipped(NAME, f"the TLS settings cannot be read: {str(exc).strip()}")
    if not tls.ssl:
        return passed(NAME, "ssl is off: the server presents no certificate", 0)
    certificate, where = _certificate(tls)
    if certificate is None:
        return skipped(NAME, f"certificate not checked: {where}")
    expires = certificate.not_valid_after_utc
    days = (expires - datetime.now(UTC)).total_seconds() / 86400
    facts = {"expires_at": expires.isoformat(), "days_left": round(days, 3), "source": where}
    problems: list[tuple[Severity, str]] = []
    if days <= 0:
        problems.append((Severity.P1, f"the server certificate expired on {expires:%Y-%m-%d}"))
    elif days <= warn_days:
        problems.append((Severity.P2, f"the server certificate expires in {days:.1f} days"))
    key = key_problem(tls.key_file)
    if key:
        problems.append((Severity.P1, key))
    severity = worst([s for s, _ in problems])
    if severity is None:
        return CheckResult(
            NAME, True, None, f"certificate valid for {days:.0f} days", days, details=[facts]
        )
    message = "; ".join(m for _, m in problems) + f" (read from {where})"
    return failed(NAME, severity, message, days, [facts])
