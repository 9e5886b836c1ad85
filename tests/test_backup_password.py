"""A password-protected target: pg_basebackup gets the password from its environment."""

from __future__ import annotations

import json

from conftest import Server, run_cli


def test_backup_over_tcp_with_a_password(pg18: Server, backup_env: dict[str, str]) -> None:
    url = pg18.cluster.tcp_url(with_password=True)
    result = run_cli("backup", "--json", env=backup_env | {"DATABASE_URL": url})
    assert result.code == 0, result.stderr
    backup = json.loads(result.stdout)
    assert backup["pg_major"] == 18
    secret = pg18.cluster.password_file.read_text().strip()
    assert secret not in result.stdout + result.stderr
