#!/usr/bin/env bash
# Set up a fresh machine for pgdr: Debian packages (PostgreSQL 15 for the second-version tests,
# pgBackRest for the benchmarks, Chromium for the dashboard tests) and a virtual environment with pgdr and its dev tools.
# Idempotent: a second run installs nothing and takes a few seconds.
set -euo pipefail
cd "$(dirname "$0")/.."

DEBIAN_PACKAGES=(postgresql-15 postgresql-client-15 postgresql-contrib pgbackrest zstd chromium chromium-driver prometheus python3-venv)

missing=()
for pkg in "${DEBIAN_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "pgdr setup: please install: ${missing[*]} (needs root)" >&2
    exit 2
  fi
  echo "pgdr setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # Debian's postgresql-common would create and start a system cluster; pgdr runs its own.
  mkdir -p /etc/postgresql-common/createcluster.d
  echo "create_main_cluster = false" > /etc/postgresql-common/createcluster.d/pgdr.conf
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
stamp=.venv/.pgdr-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  .venv/bin/python -m pip install -q --upgrade pip >/dev/null
  .venv/bin/python -m pip install -q -e ".[dev]"
  touch "$stamp"
fi
# pgdr's own modules as bytecode, as an installed tool has them: where PYTHONDONTWRITEBYTECODE
# is set, every command would otherwise compile them again as it starts (0.05-0.3 s each)
.venv/bin/python -m compileall -q src/pgdr >/dev/null

# Patroni (for the high-availability tests) in its own venv on the system Python: it runs as the
# unprivileged service user, who cannot reach a Python under /root.
PATRONI_VENV=${PGDR_PATRONI:-/opt/pgdr-patroni}
if [ ! -x "$PATRONI_VENV/bin/patroni" ] && [ -w "$(dirname "$PATRONI_VENV")" ]; then
  /usr/bin/python3 -m venv "$PATRONI_VENV"
  "$PATRONI_VENV/bin/pip" install -q 'patroni[raft,psycopg3]>=4,<5'
fi
