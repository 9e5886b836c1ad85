"""The ConvoAI schema, its deterministic demo data, and the profile format."""

from __future__ import annotations

import json
from pathlib import Path

import psycopg
import pytest

from conftest import Server, run_cli
from pgdr.core.errors import ConfigError, RuntimeFailure
from pgdr.profile import load_profile
from pgdr.sample import VectorType, load_sample, scale_counts

FINGERPRINT = """
SELECT md5(string_agg(u::text, '|' ORDER BY u.id)) FROM users u
UNION ALL SELECT md5(string_agg(c::text, '|' ORDER BY c.id)) FROM chatbots c
UNION ALL SELECT md5(string_agg(e.id || ':' || e.content || ':' || e.embedding::text, '|'
                                ORDER BY e.id)) FROM embeddings e
"""


def _fingerprint(conninfo: str) -> list[str]:
    with psycopg.connect(conninfo) as conn:
        return [r[0] for r in conn.execute(FINGERPRINT).fetchall()]


def test_sample_is_deterministic_and_complete(pg18: Server) -> None:
    a, b = pg18.new_database("template1"), pg18.new_database("template1")
    report = load_sample(a, scale=0.01, seed=7)
    load_sample(b, scale=0.01, seed=7)
    assert _fingerprint(a) == _fingerprint(b)
    assert report.rows == scale_counts(0.01)
    with psycopg.connect(a) as conn:
        dims = conn.execute("SELECT DISTINCT vector_dims(embedding) FROM embeddings").fetchall()
        assert dims == [(1536,)]
        statuses = {r[0] for r in conn.execute("SELECT DISTINCT status FROM chatbots")}
        assert statuses <= {"pending", "scraping", "embedding", "ready", "failed"}
        kinds = dict(
            conn.execute(
                "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'embeddings'"
            ).fetchall()
        )
        assert "hnsw" in kinds["embeddings_embedding_hnsw"]
        fks = conn.execute(
            "SELECT count(*) FROM pg_constraint WHERE contype = 'f' AND connamespace = "
            "'public'::regnamespace"
        ).fetchone()
        assert fks == (6,)
        typ = conn.execute(
            "SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
            "WHERE attrelid = 'embeddings'::regclass AND attname = 'embedding'"
        ).fetchone()
        assert typ == ("extensions.vector(1536)",) or typ == ("vector(1536)",)
        ext_schema = conn.execute(
            "SELECT extnamespace::regnamespace::text FROM pg_extension WHERE extname = 'vector'"
        ).fetchone()
        assert ext_schema == ("extensions",)
    other_seed = pg18.new_database("template1")
    load_sample(other_seed, scale=0.01, seed=8)
    assert _fingerprint(other_seed) != _fingerprint(a)


def test_sample_never_overwrites_without_force(db18: str) -> None:
    with psycopg.connect(db18, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO users (id, email, full_name) VALUES (gen_random_uuid(), 'keep@x', 'K')"
        )
    with pytest.raises(ConfigError, match="pass --force"):
        load_sample(db18, scale=0.01)
    with psycopg.connect(db18) as conn:
        assert conn.execute("SELECT count(*) FROM users WHERE email = 'keep@x'").fetchone() == (1,)
    load_sample(db18, scale=0.01, force=True)
    with psycopg.connect(db18) as conn:
        assert conn.execute("SELECT count(*) FROM users WHERE email = 'keep@x'").fetchone() == (0,)


def test_pg15_without_pgvector(pg15: Server) -> None:
    db = pg15.new_database("template1")
    with pytest.raises(RuntimeFailure, match="pgvector is not installed"):
        load_sample(db, scale=0.01)
    report = load_sample(db, scale=0.01, vector_type=VectorType.ARRAY)
    assert report.vector_type == "real[]"
    with psycopg.connect(db) as conn:
        row = conn.execute("SELECT array_length(embedding, 1) FROM embeddings LIMIT 1").fetchone()
        assert row == (1536,)


def test_sample_cli(pg18: Server, cli_env: dict[str, str]) -> None:
    env = cli_env | {"DATABASE_URL": pg18.new_database("template1")}
    result = run_cli("sample", "load", "--scale", "0.01", "--json", "--no-vector-indexes", env=env)
    assert result.code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["rows"]["embeddings"] == scale_counts(0.01)["embeddings"]
    again = run_cli("sample", "load", "--scale", "0.01", env=env)
    assert again.code == 2 and "--force" in again.stderr
    bad = run_cli("sample", "load", "--scale", "0", env=env)
    assert bad.code == 2 and "--scale must be greater than 0" in bad.stderr


def test_builtin_profile() -> None:
    profile = load_profile("convoai")
    assert [t.name for t in profile.tables][:3] == ["users", "chatbots", "subscriptions"]
    kb = profile.embedding_source("knowledge_base")
    assert kb.dimension == 1536 and kb.filter == "enabled"
    emb = profile.embedding_source("embeddings")
    assert emb.status is not None and emb.status.working == "embedding"
    with pytest.raises(ConfigError, match="no embedding source 'x'"):
        profile.embedding_source("x")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('name = "p"\n[[tables]]\nname = "t"\ncritcal = true\n', "tables.0.critcal"),
        ('name = "p"\n[[embeddings]]\nname="e"\ntable="t"\ntext="x"\ndimension=0\n', "dimension"),
        ("name = ", "not valid TOML"),
        (
            'name = "p"\n[[relations]]\nchild="a"\nchild_columns=["x","y"]\nparent="b"\n',
            "same length",
        ),
    ],
)
def test_bad_profiles_are_clear(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "p.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        load_profile(str(path))


def test_profile_cli(cli_env: dict[str, str], tmp_path: Path) -> None:
    result = run_cli("profile", "show", "--json", env=cli_env)
    assert result.code == 0
    assert json.loads(result.stdout)["name"] == "convoai"
    missing = run_cli("profile", "show", str(tmp_path / "none.toml"), env=cli_env)
    assert missing.code == 2 and "neither a built-in profile" in missing.stderr
