"""Moving the vector extension to another schema in place, keeping every vector.

Migration 005 moved pgvector from ``public`` to ``extensions`` by dropping and recreating the
vector columns, which lost every embedding. ``ALTER EXTENSION vector SET SCHEMA`` does the same
move in place (the type keeps its OID, so columns, indexes and data stay) when the installed
pgvector declares itself relocatable, which :func:`relocate_vector` checks first.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import psycopg
from psycopg import sql

from pgdr.core.errors import ConfigError, RuntimeFailure


@dataclass
class RelocateReport:
    extension: str
    version: str
    from_schema: str
    to_schema: str
    moved: bool
    vector_columns: int
    search_path: str
    search_path_ok: bool

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def relocate_vector(
    conn: psycopg.Connection[Any], schema: str, extension: str = "vector"
) -> RelocateReport:
    """Move ``extension`` to ``schema`` (created if needed) in one transaction."""
    row = conn.execute(
        "SELECT e.extversion, n.nspname, v.relocatable FROM pg_extension e "
        "JOIN pg_namespace n ON n.oid = e.extnamespace "
        "LEFT JOIN pg_available_extension_versions v "
        "ON v.name = e.extname AND v.version = e.extversion WHERE e.extname = %s",
        (extension,),
    ).fetchone()
    if row is None:
        raise ConfigError(f"The extension {extension!r} is not installed in this database.")
    version, current, relocatable = str(row[0]), str(row[1]), row[2]
    moved = False
    if current != schema:
        if not relocatable:
            raise RuntimeFailure(
                f"pgvector {version} is not relocatable (its control file says "
                "relocatable = false); it cannot be moved in place, upgrade pgvector first."
            )
        try:
            with conn.transaction():
                conn.execute(
                    sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema))
                )
                conn.execute(
                    sql.SQL("ALTER EXTENSION {} SET SCHEMA {}").format(
                        sql.Identifier(extension), sql.Identifier(schema)
                    )
                )
        except psycopg.Error as exc:
            raise RuntimeFailure(
                f"Moving {extension} to schema {schema!r} failed: {exc.diag.message_primary}."
            ) from exc
        moved = True
    columns = conn.execute(
        "SELECT count(*) FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid "
        "JOIN pg_class c ON c.oid = a.attrelid "
        "WHERE t.typname = 'vector' AND a.attnum > 0 AND NOT a.attisdropped AND c.relkind = 'r'"
    ).fetchone()
    path_row = conn.execute(
        "SELECT coalesce((SELECT s.setting FROM (SELECT unnest(d.setconfig) AS setting "
        "FROM pg_db_role_setting d JOIN pg_database db ON db.oid = d.setdatabase "
        "WHERE db.datname = current_database() AND d.setrole = 0) s "
        "WHERE s.setting LIKE 'search_path=%%' LIMIT 1), 'search_path=' || "
        "current_setting('search_path'))"
    ).fetchone()
    search_path = str(path_row[0]).split("=", 1)[1] if path_row else ""
    in_path = schema in [p.strip().strip('"') for p in search_path.split(",")]
    return RelocateReport(
        extension=extension,
        version=version,
        from_schema=current,
        to_schema=schema,
        moved=moved,
        vector_columns=int(columns[0]) if columns else 0,
        search_path=search_path,
        search_path_ok=in_path,
    )
