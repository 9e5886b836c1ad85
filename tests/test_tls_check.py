"""The tls_certificate check against a real PostgreSQL with ssl=on and a short-lived certificate."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from pgdr.cluster import LocalCluster, choose_installation, find_installations
from pgdr.config import PgdrSettings
from pgdr.core.severity import Severity
from pgdr.monitoring.tls import check_tls, server_certificate


def write_certificate(cluster: LocalCluster, not_after: datetime) -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    start = min(not_after, datetime.now(UTC)) - timedelta(days=1)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(not_after)
        .sign(key, hashes.SHA256())
    )
    crt, pem = cluster.data_dir / "server.crt", cluster.data_dir / "server.key"
    crt.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pem.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    cluster.user.own(crt, 0o644)
    cluster.user.own(pem, 0o600)
    return cert


@pytest.mark.pg15
def test_certificate_expiry_and_key_mode(settings: PgdrSettings) -> None:
    # Debian's PostgreSQL 15 is built with OpenSSL (the embedded 18 is not)
    if not any(i.major == 15 for i in find_installations()):
        pytest.skip("Debian's PostgreSQL 15 is not installed")
    cluster = LocalCluster(settings.home / "clusters" / f"tls-{os.getpid()}", settings)
    cluster.create(choose_installation(None, 15))
    cluster.start()
    try:
        url = cluster.conninfo()
        assert check_tls(url).ok  # ssl is off: nothing to expire, and said so
        cert = write_certificate(cluster, datetime.now(UTC) + timedelta(days=2))
        cluster.set_config("ssl = on\n")
        cluster.stop()
        cluster.start()
        soon = check_tls(url, warn_days=14)
        assert not soon.ok and soon.severity is Severity.P2, soon.message
        assert "expires in 2.0 days" in soon.message and "server.crt" in soon.message
        assert check_tls(url, warn_days=1).ok
        served = server_certificate("127.0.0.1", cluster.port)  # the connection's view
        assert served is not None and served.serial_number == cert.serial_number
        (cluster.data_dir / "server.key").chmod(0o644)
        loose = check_tls(url, warn_days=1)
        assert loose.severity is Severity.P1 and "mode 644" in loose.message
        write_certificate(cluster, datetime.now(UTC) - timedelta(hours=1))
        expired = check_tls(url)
        assert expired.severity is Severity.P1 and "expired" in expired.message
    finally:
        cluster.stop()
        cluster.destroy()
