"""``pgdr undelete``: Scenario 3 in one command, the deleting transaction found in the WAL."""

from __future__ import annotations

import json
import uuid

import psycopg

from fixtures.wal import WalEnv
from pgdr.sample import VectorType, load_sample
from test_bad_input import assert_one_sentence
from test_pitr import backup, wait_streamed
from test_recover_rows import contents


def chatbots_with_children(url: str, n: int) -> list[str]:
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT chatbot_id::text FROM conversations GROUP BY 1 ORDER BY count(*) DESC, 1"
            " LIMIT %s",
            (n,),
        ).fetchall()
    return [str(r[0]) for r in rows]


def test_undelete_finds_the_deletion_and_puts_rows_back(walenv: WalEnv) -> None:
    w = walenv
    vector = VectorType.VECTOR if w.cluster.installation.has_pgvector else VectorType.ARRAY
    load_sample(w.conninfo, scale=0.01, vector_type=vector)
    stream = w.start_stream()
    backup(w)
    w.sql("UPDATE chatbots SET name = name || ' v2' WHERE id IN (SELECT id FROM chatbots LIMIT 2)")
    keys = chatbots_with_children(w.conninfo, 3)
    expected = contents(w.conninfo)
    w.sql("DELETE FROM chatbots WHERE id = ANY(%s::uuid[])", (keys,))
    w.insert(5)  # work after the accident is kept
    damaged = contents(w.conninfo)
    assert damaged != expected
    wait_streamed(w)

    args = ["undelete", "--table", "chatbots", *[f"--key={k}" for k in keys], "--json"]
    dry = w.cli(*args)
    assert dry.code == 0, dry.stdout + dry.stderr
    preview = json.loads(dry.stdout)
    assert not preview["applied"] and preview["preview"]["public.chatbots"] == 3
    assert preview["preview"]["public.messages"] > 0 and preview["xid"]
    assert contents(w.conninfo) == damaged  # a dry run changes nothing
    unknown = w.cli("undelete", "--table", "chatbots", "--key", str(uuid.uuid4()), "--yes")
    assert unknown.code == 2, unknown.stdout + unknown.stderr
    assert "No row of public.chatbots with these keys" in assert_one_sentence(unknown.stderr)
    assert contents(w.conninfo) == damaged

    done = w.cli(*args, "--yes")
    assert done.code == 0, done.stdout + done.stderr
    result = json.loads(done.stdout)
    assert result["applied"] and result["inserted"]["public.chatbots"] == 3
    assert contents(w.conninfo) == expected
    assert not list((w.cluster.settings.home / "scratch").glob("undelete-*"))
    w.stop_stream(stream)
