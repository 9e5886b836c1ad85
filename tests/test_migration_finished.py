"""One answer to "is migration 005 finished?": reembed, the runbook's count, inventory compare.

Real PostgreSQL 18 + pgvector, the fake embeddings API. Three chatbots failed before the
migration ("crawl failed: HTTP 503"): their vectors are not required, are reported by cause, and
never keep `inventory compare` failing; `--chatbot` does not turn such a chatbot `ready`.
"""

from __future__ import annotations

import json
from typing import Any

import psycopg

from conftest import run_cli
from fixtures.embeddings import migrate_005


def _rows(conninfo: str, query: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(conninfo, autocommit=True) as conn:
        return conn.execute(query, params or None).fetchall()


def test_one_definition_of_a_finished_migration(embed_env: dict[str, str], db18: str) -> None:
    env = embed_env
    saved = run_cli("inventory", "--save", "--json", env=env)
    assert saved.code == 0, saved.stderr
    failed = [
        str(r[0])
        for r in _rows(
            db18,
            "SELECT id FROM chatbots WHERE status = 'ready' AND id IN "
            "(SELECT chatbot_id FROM embeddings) ORDER BY id LIMIT 3",
        )
    ]
    _rows(
        db18,
        "UPDATE chatbots SET status = 'failed', status_reason = 'crawl failed: HTTP 503' "
        "WHERE id = ANY(%s::uuid[]) RETURNING id",
        failed,
    )
    migrate_005(db18)

    done = run_cli("reembed", "--json", env=env)
    assert done.code == 0, done.stderr
    verification = {v["table_name"]: v for v in json.loads(done.stdout)["verification"]}
    emb = verification["embeddings"]
    assert emb["missing"] == 0
    # the runbook's own query counts every NULL vector: missing + not required, never apart
    [(runbook_missing,)] = _rows(
        db18, "SELECT count(*) FILTER (WHERE embedding IS NULL) FROM embeddings"
    )
    assert runbook_missing == emb["missing"] + emb["not_required"] > 0
    causes = {c["cause"]: c for c in emb["by_cause"]}
    assert causes["failed"]["groups"] >= 3
    assert "in status failed were not regenerated" in causes["failed"]["sentence"]
    assert sum(c["vectors"] for c in emb["by_cause"]) == emb["not_required"]
    human = run_cli("reembed", env=env)
    assert "in status failed were not regenerated" in human.stdout

    # inventory compare agrees: the required vectors are back, so it clears (exit 0)
    compared = run_cli("inventory", "compare", "--json", env=env)
    assert compared.code == 0, compared.stdout
    report = json.loads(compared.stdout)
    assert not [f for f in report["findings"] if f["severity"] == "critical"]
    info = [f for f in report["findings"] if f["code"] == "not_required"]
    assert any("in status failed were not regenerated" in f["message"] for f in info)

    # --chatbot regenerates a failed chatbot's vectors but never turns it ready
    one = run_cli("reembed", "--source", "embeddings", "--chatbot", failed[0], "--json", env=env)
    assert one.code == 0, one.stderr
    [(status, reason)] = _rows(
        db18, "SELECT status, status_reason FROM chatbots WHERE id = %s::uuid", failed[0]
    )
    assert (status, reason) == ("failed", "crawl failed: HTTP 503")
    [(nulls,)] = _rows(
        db18,
        "SELECT count(*) FROM embeddings WHERE chatbot_id = %s::uuid AND embedding IS NULL",
        failed[0],
    )
    assert nulls == 0


def test_reembed_checks_everything_before_writing(embed_env: dict[str, str], db18: str) -> None:
    migrate_005(db18)
    indexes = _rows(db18, "SELECT indexname FROM pg_indexes WHERE indexdef LIKE '%hnsw%'")
    bad = run_cli(
        "reembed", "--drop-indexes", "always", "--maintenance-work-mem", "lots", env=embed_env
    )
    assert bad.code == 2, bad.stderr
    assert "--maintenance-work-mem 'lots' is not a valid" in bad.stderr
    assert _rows(db18, "SELECT indexname FROM pg_indexes WHERE indexdef LIKE '%hnsw%'") == indexes

    readonly = run_cli("readonly", "on", env=embed_env)
    assert readonly.code == 0, readonly.stderr
    try:
        stopped = run_cli("reembed", env=embed_env)
    finally:
        assert run_cli("readonly", "off", env=embed_env).code == 0
    assert stopped.code == 3
    lines = [ln for ln in stopped.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "read-only mode" in lines[0], stopped.stderr
    assert "Traceback" not in stopped.stderr
