"""Point-in-time restores that must not mislead: stopping just before a bad transaction, an
unreached target, a repository that lost its newest backups or WAL, a full disk, a read-only
repository, and what a killed restore leaves behind.
"""

from __future__ import annotations

import psycopg
import pytest

from fixtures.wal import WalEnv
from test_pitr import backup, ids, restore, stop_restored, wait_streamed


def _delete_in_one_transaction(w: WalEnv, below: int) -> str:
    """DELETE rows in one transaction; returns its transaction id."""
    with psycopg.connect(w.conninfo) as conn:
        conn.execute("DELETE FROM txlog WHERE id <= %s", (below,))
        row = conn.execute("SELECT pg_current_xact_id()::text").fetchone()
        assert row is not None
        conn.commit()
    return str(row[0])


@pytest.mark.slow
def test_exclusive_xid_gives_the_state_before_a_delete(walenv: WalEnv) -> None:
    w = walenv
    stream = w.start_stream()
    w.insert(20)
    backup(w)
    w.insert(5)
    before = ids(w.conninfo)
    xid = _delete_in_one_transaction(w, 10)
    after = ids(w.conninfo)
    w.insert(5)
    wait_streamed(w)

    exclusive = restore(w, "--target-xid", xid, "--exclusive")
    assert ids(exclusive["url"]) == before
    assert exclusive["target"] == f"just before xid {xid}"
    stop_restored(w, exclusive)

    inclusive = restore(w, "--target-xid", xid)
    assert ids(inclusive["url"]) == after
    stop_restored(w, inclusive)
    w.stop_stream(stream)

    lonely = w.cli("restore", "--latest", "--exclusive", "--new-cluster")
    assert lonely.code == 2 and "--exclusive goes with" in lonely.stderr
