"""`pgdr reembed` and `pgdr vector relocate` against real PostgreSQL 18 + pgvector."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from typing import Any

import numpy as np
import psycopg
from pgvector.psycopg import register_vector

from conftest import run_cli
from fixtures.embeddings import migrate_005
from pgdr.embeddings import EmbeddingSettings, OpenAIProvider, Reembedder, ReembedOptions
from pgdr.embeddings.engine import PROBE_TEXT
from pgdr.embeddings.fake_api import FakeEmbeddingsAPI, fake_vector
from pgdr.embeddings.jobs import ensure_schema
from pgdr.embeddings.source import resolve_source
from pgdr.embeddings.writer import write_batch
from pgdr.profile import load_profile

KB_TEXT = "question || E'\\n' || answer"


def _rows(conninfo: str, query: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(conninfo, options="-c search_path=public,extensions") as conn:
        register_vector(conn)
        return conn.execute(query, params or None).fetchall()


def _one(conninfo: str, query: str, *params: Any) -> Any:
    return _rows(conninfo, query, *params)[0][0]


def _assert_fake_vectors(conninfo: str, table: str, text: str, where: str = "true") -> int:
    rows = _rows(conninfo, f"SELECT {text}, embedding FROM {table} WHERE {where}")
    for content, vec in rows:
        assert vec is not None
        np.testing.assert_allclose(vec.to_numpy(), fake_vector(content, 1536), rtol=1e-6)
    return len(rows)


def _ready_rows(conninfo: str) -> int:
    return int(
        _one(
            conninfo,
            "SELECT count(*) FROM embeddings e JOIN chatbots c ON c.id = e.chatbot_id "
            "WHERE c.status = 'ready'",
        )
    )


def test_regenerates_migration_005_and_verifies(
    embed_env: dict[str, str], db18: str, fake_api: FakeEmbeddingsAPI
) -> None:
    statuses_before = dict(_rows(db18, "SELECT id, status FROM chatbots"))
    migrate_005(db18)
    r = run_cli("reembed", "--json", env=embed_env)
    assert r.code == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["ok"] is True
    assert {v["table_name"]: v["missing"] for v in report["verification"]} == {
        "embeddings": 0,
        "knowledge_base": 0,
    }
    # Every chunk of a ready chatbot has its vector, from its own text.
    n = _assert_fake_vectors(
        db18,
        "embeddings",
        "content",
        "chatbot_id IN (SELECT id FROM chatbots WHERE status = 'ready')",
    )
    assert n == _ready_rows(db18) > 0
    # Knowledge base: enabled entries only, text question || '\n' || answer.
    assert _assert_fake_vectors(db18, "knowledge_base", KB_TEXT, "enabled") > 0
    assert (
        _one(
            db18, "SELECT count(*) FROM knowledge_base WHERE NOT enabled AND embedding IS NOT NULL"
        )
        == 0
    )
    # Statuses are back where they were; the HNSW indexes were dropped and rebuilt.
    assert dict(_rows(db18, "SELECT id, status FROM chatbots")) == statuses_before
    assert [s["indexes_rebuilt"] for s in report["sources"]] == [1, 1]
    indexes = _rows(
        db18, "SELECT indexname FROM pg_indexes WHERE indexdef LIKE '%hnsw%' ORDER BY 1"
    )
    assert indexes == [("embeddings_embedding_hnsw",), ("knowledge_base_embedding_hnsw",)]
    # Many inputs per request; the status command shows the finished jobs.
    assert report["provider"]["requests"] < report["provider"]["inputs"]
    status = run_cli("reembed", "status", "--json", env=embed_env)
    jobs = json.loads(status.stdout)["jobs"]
    assert [(j["source"], j["state"], j["done_rows"] == j["total_rows"]) for j in jobs] == [
        ("knowledge_base", "done", True),
        ("embeddings", "done", True),
    ]


def test_wrong_dimension_stops_before_writing(
    embed_env: dict[str, str], db18: str, fake_api: FakeEmbeddingsAPI
) -> None:
    migrate_005(db18)
    fake_api.fixed_dimension = 768
    r = run_cli("reembed", env=embed_env)
    assert r.code == 2
    assert "returns 768-dimensional vectors but embeddings.embedding is" in r.stderr
    assert "nothing was written" in r.stderr
    assert _one(db18, "SELECT count(embedding) FROM embeddings") == 0
    assert _one(db18, "SELECT to_regclass('pgdr.reembed_jobs') IS NOT NULL") is True
    assert _one(db18, "SELECT count(*) FROM pgdr.reembed_jobs") == 0
    assert _one(db18, "SELECT count(*) FROM pg_indexes WHERE indexdef LIKE '%hnsw%'") == 2
    assert fake_api.stats()["requests"] == 1  # the probe


def test_missing_key_is_a_usage_error(embed_env: dict[str, str], db18: str) -> None:
    env = {k: v for k, v in embed_env.items() if k != "OPENAI_API_KEY"}
    r = run_cli("reembed", env=env)
    assert r.code == 2
    assert "OPENAI_API_KEY is not set" in r.stderr
    assert "Traceback" not in r.stderr
    assert _one(db18, "SELECT to_regclass('pgdr.reembed_jobs')") is None


def test_row_over_the_token_limit_fails_its_chatbot_clearly(
    embed_env: dict[str, str], db18: str, fake_api: FakeEmbeddingsAPI
) -> None:
    bad = _rows(
        db18,
        "SELECT e.id, e.chatbot_id FROM embeddings e JOIN chatbots c ON c.id = e.chatbot_id "
        "WHERE c.status = 'ready' ORDER BY e.id LIMIT 1",
    )[0]
    migrate_005(db18)
    with psycopg.connect(db18) as conn:
        conn.execute(
            "UPDATE embeddings SET content = repeat('word ', 9000) WHERE id = %s", (bad[0],)
        )
    r = run_cli("reembed", "--source", "embeddings", "--json", env=embed_env)
    assert r.code == 1
    assert "1 rows failed" in r.stderr
    report = json.loads(r.stdout)
    assert report["sources"][0]["failed"] == 1
    # The other rows are written; the chatbot is failed with the reason, the others ready.
    assert (
        _one(
            db18,
            "SELECT count(*) FROM embeddings WHERE embedding IS NULL AND chatbot_id IN "
            "(SELECT id FROM chatbots WHERE status = 'ready')",
        )
        == 0
    )
    status, reason = _rows(
        db18, "SELECT status, status_reason FROM chatbots WHERE id = %s", bad[1]
    )[0]
    assert status == "failed"
    assert "re-embedding failed for 1 of" in reason
    assert "over the limit of 8191 tokens per input" in reason
    jobs = json.loads(run_cli("reembed", "status", "--json", env=embed_env).stdout)["jobs"]
    assert jobs[0]["failures"][0]["key"] == str(bad[0])
    assert "tokens per input" in jobs[0]["failures"][0]["reason"]
    # Fix the text, retry that chatbot's missing rows: it is ready again, reason cleared.
    with psycopg.connect(db18) as conn:
        conn.execute("UPDATE embeddings SET content = 'fixed' WHERE id = %s", (bad[0],))
    args = ["--source", "embeddings", "--chatbot", str(bad[1]), "--missing-only", "--json"]
    r = run_cli("reembed", *args, env=embed_env)
    assert r.code == 0, r.stderr
    assert json.loads(r.stdout)["sources"][0]["written"] == 1
    assert _rows(db18, "SELECT status, status_reason FROM chatbots WHERE id = %s", bad[1]) == [
        ("ready", None)
    ]


def test_killed_mid_batch_resumes_without_resending_finished_rows(
    embed_env: dict[str, str], db18: str, fake_api: FakeEmbeddingsAPI
) -> None:
    migrate_005(db18)
    fake_api.latency = 0.25
    args = ["reembed", "--source", "embeddings", "--batch-rows", "4", "--workers", "1"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "pgdr", *args],
        env=embed_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    done = 0
    while done < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
        if _one(db18, "SELECT to_regclass('pgdr.reembed_batches') IS NOT NULL"):
            done = _one(db18, "SELECT count(*) FROM pgdr.reembed_batches WHERE state = 'done'")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    finished_keys = {
        k
        for (keys,) in _rows(db18, "SELECT keys FROM pgdr.reembed_batches WHERE state = 'done'")
        for k in keys
    }
    total = _one(db18, "SELECT total_rows FROM pgdr.reembed_jobs")
    assert 0 < len(finished_keys) < total
    finished_texts = {
        t
        for (t,) in _rows(
            db18, "SELECT content FROM embeddings WHERE id::text = ANY(%s)", list(finished_keys)
        )
    }
    time.sleep(0.5)  # let the server finish answering the dead process's request
    # no live worker session: the job is dead, not "running, ETA 16 s"
    status = run_cli("reembed", "status", "--json", env=embed_env)
    [job] = json.loads(status.stdout)["jobs"]
    assert (job["state"], job["eta_seconds"]) == ("dead", None)
    fake_api.reset()
    fake_api.latency = 0.0

    r = run_cli(*args, "--json", env=embed_env)
    assert r.code == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["sources"][0]["resumed"] is True
    # Nothing finished before the kill was sent again, and nothing was lost.
    assert not finished_texts & set(fake_api.texts)
    all_texts = {
        t
        for (t,) in _rows(
            db18,
            "SELECT content FROM embeddings WHERE id::text = ANY(%s)",
            [k for (ks,) in _rows(db18, "SELECT keys FROM pgdr.reembed_batches") for k in ks],
        )
    }
    assert set(fake_api.texts) == all_texts - finished_texts
    assert fake_api.stats()["max_sends_per_text"] == 1, [
        (t[:30], n) for t, n in fake_api.texts.items() if n > 1
    ]
    assert _one(db18, "SELECT sum(written) FROM pgdr.reembed_batches") == total
    assert _one(db18, "SELECT count(*) FROM pgdr.reembed_batches WHERE state <> 'done'") == 0
    assert (
        _assert_fake_vectors(
            db18,
            "embeddings",
            "content",
            "chatbot_id IN (SELECT id FROM chatbots WHERE status = 'ready')",
        )
        == total
    )
    assert _one(db18, "SELECT count(*) FROM chatbots WHERE status = 'embedding'") == 0


def test_chatbot_deleted_during_the_job(db18: str, fake_api: FakeEmbeddingsAPI) -> None:
    migrate_005(db18)
    victim = _one(
        db18,
        "SELECT c.id FROM chatbots c JOIN embeddings e ON e.chatbot_id = c.id "
        "WHERE c.status = 'ready' GROUP BY c.id ORDER BY count(*) DESC LIMIT 1",
    )
    victim_rows = _one(db18, "SELECT count(*) FROM embeddings WHERE chatbot_id = %s", victim)
    deleted = []

    def delete_once(inputs: list[str]) -> None:
        if not deleted and len(inputs) > 1:  # not the dimension probe: the job's first batch
            deleted.append(victim)
            with psycopg.connect(db18, autocommit=True) as conn:
                conn.execute("DELETE FROM chatbots WHERE id = %s", (victim,))

    fake_api.on_request = delete_once
    settings = EmbeddingSettings(
        OPENAI_BASE_URL=fake_api.base_url, OPENAI_API_KEY=fake_api.api_key, retry_base=0.01
    )  # type: ignore[call-arg]
    provider = OpenAIProvider(settings)
    try:
        engine = Reembedder(
            db18,
            load_profile("convoai"),
            provider,
            ReembedOptions(sources=["embeddings"], batch_rows=1000, workers=1),
        )
        engine.prepare()
        report = engine.run()
    finally:
        provider.close()
    assert deleted == [victim]
    src = report.sources[0]
    assert src.gone == victim_rows
    assert src.written == src.total_rows - victim_rows
    assert report.ok
    assert _one(db18, "SELECT count(*) FROM chatbots WHERE status = 'embedding'") == 0


def test_warm_cache_regenerates_without_api_calls(
    embed_env: dict[str, str], db18: str, fake_api: FakeEmbeddingsAPI
) -> None:
    before = dict(_rows(db18, "SELECT id, embedding FROM embeddings"))
    r = run_cli("reembed", "--save-cache", "--json", env=embed_env)
    assert r.code == 0, r.stderr
    saved = json.loads(r.stdout)["saved"]
    assert [s["added"] > 0 for s in saved] == [True, True]
    migrate_005(db18)
    r = run_cli("reembed", "--json", env=embed_env)
    assert r.code == 0, r.stderr
    report = json.loads(r.stdout)
    assert fake_api.stats()["requests"] == 0
    assert report["provider"]["requests"] == 0
    assert sum(s["api_inputs"] for s in report["sources"]) == 0
    # The cache gave back the very vectors the migration dropped.
    after = dict(_rows(db18, "SELECT id, embedding FROM embeddings WHERE embedding IS NOT NULL"))
    assert after
    for key, vec in after.items():
        np.testing.assert_array_equal(vec.to_numpy(), before[key].to_numpy())
    # Cached vectors (1,536 dimensions) are kept whole in the heap: none went to TOAST.
    options, toasted = _rows(
        db18,
        "SELECT reloptions, pg_relation_size(reltoastrelid) FROM pg_class "
        "WHERE oid = 'pgdr.embedding_cache'::regclass",
    )[0]
    assert "toast_tuple_target=8160" in options
    assert toasted == 0


def test_a_batch_mixes_cache_hits_and_changed_texts(
    embed_env: dict[str, str], db18: str, fake_api: FakeEmbeddingsAPI
) -> None:
    """Rows whose text is cached get the cached vector; only the changed texts go out, once."""
    before = dict(_rows(db18, "SELECT id, embedding FROM embeddings"))
    r = run_cli("reembed", "--source", "embeddings", "--save-cache", "--json", env=embed_env)
    assert r.code == 0, r.stderr
    changed = [
        row[0]
        for row in _rows(
            db18,
            "UPDATE embeddings SET content = 'rewritten: ' || content WHERE id IN (SELECT e.id "
            "FROM embeddings e JOIN chatbots c ON c.id = e.chatbot_id WHERE c.status = 'ready' "
            "ORDER BY e.id LIMIT 7) RETURNING id",
        )
    ]
    migrate_005(db18)
    fake_api.reset()
    r = run_cli("reembed", "--source", "embeddings", "--batch-rows", "50", "--json", env=embed_env)
    assert r.code == 0, r.stderr
    src = json.loads(r.stdout)["sources"][0]
    assert (src["api_inputs"], src["written"]) == (7, src["total_rows"])
    assert src["cache_hits"] == src["total_rows"] - 7
    assert fake_api.stats()["inputs"] == 7  # no probe either: the cache knows the dimension
    assert _assert_fake_vectors(db18, "embeddings", "content", "content LIKE 'rewritten: %'") == 7
    after = _rows(db18, "SELECT id, embedding FROM embeddings WHERE embedding IS NOT NULL")
    assert len(after) == src["total_rows"]
    for key, vec in after:
        if key not in changed:  # the very vector the cache was given
            np.testing.assert_array_equal(vec.to_numpy(), before[key].to_numpy())


def test_a_fresh_vector_already_cached_is_written_and_the_cached_one_kept(db18: str) -> None:
    """A batch's fresh vectors are written to their rows and added to the cache; one whose text
    another worker cached in the meantime is written to its row too, and the cached entry is
    left as it was (the first one in stays)."""
    migrate_005(db18)
    profile = load_profile("convoai")
    with psycopg.connect(
        db18, autocommit=True, options="-c search_path=public,extensions"
    ) as conn:  # each batch its own transaction, as in a run
        ensure_schema(conn)
        src = resolve_source(conn, profile.embedding_source("embeddings"), profile.schema_name)
        texts = dict(conn.execute("SELECT id::text, content FROM embeddings LIMIT 4").fetchall())
        keys = list(texts)
        sha = {k: hashlib.sha256(t.encode()).digest() for k, t in texts.items()}
        fresh = {k: fake_vector(t, 1536) for k, t in texts.items()}
        with conn.transaction():
            staged = [(k, sha[k], fresh[k]) for k in keys[:2]]
            assert write_batch(conn, src, staged, "m", use_cache=True) == set(keys[:2])
        stale = np.full(1536, 0.5, dtype=np.float32)  # another worker's entry for keys[2]
        conn.execute(
            "INSERT INTO pgdr.embedding_cache (model, dimension, sha256, embedding) "
            "VALUES ('m', 1536, %s, %s)",
            (sha[keys[2]], stale.tolist()),
        )
        with conn.transaction():
            staged = [(k, sha[k], fresh[k]) for k in keys[2:]]
            assert write_batch(conn, src, staged, "m", use_cache=True) == set(keys[2:])
    cached = dict(_rows(db18, "SELECT sha256, embedding FROM pgdr.embedding_cache"))
    assert set(cached) == {sha[k] for k in keys}
    for key in keys:
        expected = stale if key == keys[2] else fresh[key]
        np.testing.assert_array_equal(np.array(cached[sha[key]], dtype=np.float32), expected)
    assert _assert_fake_vectors(db18, "embeddings", "content", f"id IN ({','.join(keys)})") == 4


def test_rows_of_one_text_in_a_batch_are_all_written_and_cached_once(db18: str) -> None:
    """Two rows of a batch with the same text share one fresh vector: both rows get it and
    the cache one entry (the cache insert relies on ON CONFLICT DO NOTHING within its own
    statement, not on a sort of the batch's vectors)."""
    migrate_005(db18)
    profile = load_profile("convoai")
    with psycopg.connect(db18, autocommit=True, options="-c search_path=public,extensions") as conn:
        ensure_schema(conn)
        src = resolve_source(conn, profile.embedding_source("embeddings"), profile.schema_name)
        keys = [r[0] for r in conn.execute("SELECT id::text FROM embeddings LIMIT 3").fetchall()]
        conn.execute("UPDATE embeddings SET content = 'one text' WHERE id::text = ANY(%s)", (keys,))
        sha = hashlib.sha256(b"one text").digest()
        vec = fake_vector("one text", 1536)
        with conn.transaction():
            assert write_batch(conn, src, [(k, sha, vec) for k in keys], "m", True) == set(keys)
    assert _one(db18, "SELECT count(*) FROM pgdr.embedding_cache WHERE sha256 = %s", sha) == 1
    assert _assert_fake_vectors(db18, "embeddings", "content", "content = 'one text'") == 3


def test_a_later_reader_of_the_cache_logs_no_page_images(
    embed_env: dict[str, str], db18: str, fake_api: FakeEmbeddingsAPI
) -> None:
    """A run sets the hint bits of the cache entries it adds before the next checkpoint, so the
    first reader after it (the next run, every text cached) does not log each entry's page
    whole: with data checksums on, that was 8 KB of WAL per entry."""
    migrate_005(db18)
    r = run_cli("reembed", "--source", "embeddings", "--batch-rows", "5", "--json", env=embed_env)
    assert r.code == 0, r.stderr
    with psycopg.connect(db18, autocommit=True) as conn:
        assert conn.execute("SHOW data_checksums").fetchone() == ("on",)
        conn.execute("CHECKPOINT")  # nothing read the cache since the run
        row = conn.execute(  # this query's own WAL (autovacuum may write some meanwhile)
            "EXPLAIN (ANALYZE, WAL, FORMAT JSON) SELECT count(embedding) FROM pgdr.embedding_cache"
        ).fetchone()
    assert row is not None
    plan = row[0][0]["Plan"]
    assert plan["Actual Rows"] == 1 and plan["Plans"][0]["Actual Rows"] >= 20
    assert plan["WAL FPI"] == 0, f"{plan['WAL Bytes']} bytes of WAL, {plan['WAL FPI']} page images"


def test_a_cache_created_before_inline_rows_gets_them(db18: str) -> None:
    """A cache table made by an older pgdr (default TOAST) is given the option once."""
    with psycopg.connect(db18, autocommit=True) as conn:
        conn.execute("DROP SCHEMA IF EXISTS pgdr CASCADE")
        conn.execute("CREATE SCHEMA pgdr")
        conn.execute(
            "CREATE TABLE pgdr.embedding_cache (model text NOT NULL, dimension integer NOT NULL, "
            "sha256 bytea NOT NULL, embedding real[] NOT NULL, created_at timestamptz NOT NULL "
            "DEFAULT clock_timestamp(), PRIMARY KEY (model, dimension, sha256))"
        )
        ensure_schema(conn)
        ensure_schema(conn)  # idempotent
        row = conn.execute(
            "SELECT reloptions FROM pg_class WHERE oid = 'pgdr.embedding_cache'::regclass"
        ).fetchone()
    assert row is not None
    assert row[0] == ["toast_tuple_target=8160"]


def test_missing_only_sends_only_missing_rows(
    embed_env: dict[str, str], db18: str, fake_api: FakeEmbeddingsAPI
) -> None:
    with psycopg.connect(db18) as conn:
        conn.execute(
            "UPDATE embeddings SET embedding = NULL WHERE id IN (SELECT e.id FROM embeddings e "
            "JOIN chatbots c ON c.id = e.chatbot_id WHERE c.status = 'ready' ORDER BY e.id LIMIT 5)"
        )
    r = run_cli("reembed", "--source", "embeddings", "--missing-only", "--json", env=embed_env)
    assert r.code == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["sources"][0]["total_rows"] == 5
    assert report["sources"][0]["indexes_rebuilt"] == 0  # 5 rows: the index is kept
    assert fake_api.stats()["inputs"] == 5 + 1  # the rows and the dimension probe


def test_one_chatbot_and_two_processes_share_a_job(
    embed_env: dict[str, str], db18: str, fake_api: FakeEmbeddingsAPI
) -> None:
    migrate_005(db18)
    fake_api.latency = 0.05
    bot = _one(
        db18,
        "SELECT c.id FROM chatbots c JOIN embeddings e ON e.chatbot_id = c.id "
        "WHERE c.status = 'ready' GROUP BY c.id ORDER BY count(*) DESC LIMIT 1",
    )
    args = [
        "reembed",
        "--source",
        "embeddings",
        "--chatbot",
        str(bot),
        "--batch-rows",
        "2",
        "--json",
    ]
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "pgdr", *args],
            env=embed_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    reports = [json.loads(o[0]) for o in outs]
    assert {r["sources"][0]["job_id"] for r in reports} == {1}
    rows = _one(db18, "SELECT count(*) FROM embeddings WHERE chatbot_id = %s", bot)
    assert sum(r["sources"][0]["written"] for r in reports) == rows
    assert _one(db18, "SELECT count(embedding) FROM embeddings") == rows
    # Each chunk was sent once; only the dimension probe went out once per process.
    assert {n for t, n in fake_api.texts.items() if t != PROBE_TEXT} == {1}


def test_a_worker_finishing_second_waits_for_the_first(
    embed_env: dict[str, str], db18: str, fake_api: FakeEmbeddingsAPI
) -> None:
    """Two workers end together: the one that does not close the job waits for the one that
    does and reports it done (it used to read the job too early and exit 1)."""
    migrate_005(db18)
    args = [sys.executable, "-m", "pgdr", "reembed", "--source", "embeddings", "--json"]
    with psycopg.connect(db18) as other:  # the other worker, closing job 1 right now
        other.execute("SELECT pg_advisory_xact_lock(%s, %s)", (0x70676472, 1))
        proc = subprocess.Popen(
            args, env=embed_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        deadline = time.monotonic() + 120
        while _pending_batches(db18) != 0 and proc.poll() is None:
            assert time.monotonic() < deadline, "the batches were not written"
            time.sleep(0.2)
        time.sleep(1)
        assert proc.poll() is None, proc.communicate()  # waiting for the other worker
        other.execute("UPDATE pgdr.reembed_jobs SET state = 'done' WHERE id = 1")
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert json.loads(out)["sources"][0]["finished"]


def _pending_batches(conninfo: str) -> int | None:
    try:
        return int(
            _one(conninfo, "SELECT count(*) FROM pgdr.reembed_batches WHERE state = 'pending'")
        )
    except psycopg.errors.UndefinedTable:
        return None


def test_vector_relocate_keeps_every_vector(embed_env: dict[str, str], db18: str) -> None:
    count = _one(db18, "SELECT count(embedding) FROM embeddings")
    r = run_cli("vector", "relocate", "--schema", "public", "--json", env=embed_env)
    assert r.code == 0, r.stderr
    report = json.loads(r.stdout)
    assert (report["from_schema"], report["to_schema"], report["moved"]) == (
        "extensions",
        "public",
        True,
    )
    assert (
        _one(
            db18,
            "SELECT extnamespace::regnamespace::text FROM pg_extension WHERE extname = 'vector'",
        )
        == "public"
    )
    assert _one(db18, "SELECT count(embedding) FROM embeddings") == count
    r = run_cli("vector", "relocate", "--schema", "extensions", "--json", env=embed_env)
    assert json.loads(r.stdout)["moved"] is True
    r = run_cli("vector", "relocate", "--schema", "extensions", "--json", env=embed_env)
    assert json.loads(r.stdout)["moved"] is False
    assert _one(db18, "SELECT count(embedding) FROM embeddings") == count
    assert (
        _one(
            db18,
            "SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
            "WHERE attrelid = 'embeddings'::regclass AND attname = 'embedding'",
        )
        == "vector(1536)"
    )


def test_status_without_jobs_and_unknown_source(embed_env: dict[str, str], db18: str) -> None:
    r = run_cli("reembed", "status", env=embed_env)
    assert r.code == 0
    assert "No re-embedding jobs" in r.stdout
    r = run_cli("reembed", "--source", "messages", env=embed_env)
    assert r.code == 2
    assert "has no embedding source 'messages' (it has: embeddings, knowledge_base)" in r.stderr
    r = run_cli("reembed", "--workers", "0", env=embed_env)
    assert r.code == 2
    assert "--workers and --batch-rows must be at least 1" in r.stderr


def test_array_column_is_refused_before_any_work(
    embed_env: dict[str, str], db18: str, fake_api: FakeEmbeddingsAPI
) -> None:
    with psycopg.connect(db18) as conn:
        conn.execute("ALTER TABLE knowledge_base DROP COLUMN embedding")
        conn.execute("ALTER TABLE knowledge_base ADD COLUMN embedding real[]")
    r = run_cli("reembed", "--source", "knowledge_base", env=embed_env)
    assert r.code == 2
    assert "writes pgvector columns (vector(n)) only" in r.stderr
    assert fake_api.stats()["requests"] == 0
