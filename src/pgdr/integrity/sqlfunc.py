"""``pgdr check install-sql``: the runbook's ``check_referential_integrity()`` as a SQL function.

The function is generated from the same plan as ``pgdr check`` (the catalog's foreign keys at
install time, the profile's relations, embedding and rule checks), one aggregate query per table
joined by UNION ALL, and returns one row per finding. It goes into ``public`` by default, so the
runbook's unqualified ``SELECT * FROM check_referential_integrity();`` works. The body is frozen
at install time: when a later migration renames or drops a column or table it names, calling it
fails with one sentence saying to re-run ``pgdr check install-sql`` (never a silent partial run).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import errors, sql

from pgdr.core.connect import redact
from pgdr.core.errors import RuntimeFailure
from pgdr.integrity.catalog import read_catalog
from pgdr.integrity.findings import Report
from pgdr.integrity.plan import TablePass, build_plan
from pgdr.pool import connect
from pgdr.profile import Profile

FUNCTION = "check_referential_integrity"
COLUMNS = (
    "check_name text, finding text, name text, severity text, priority text, "
    "table_name text, finding_count bigint, table_rows bigint, detail text"
)


@dataclass
class Installed:
    function: str
    checks: int
    tables: int
    skipped: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "function": self.function,
            "checks": self.checks,
            "tables": self.tables,
            "skipped": self.skipped,
        }


def _pass_sql(tp: TablePass) -> sql.Composed:
    values = sql.SQL(", ").join(
        sql.SQL("({}, {}, {}, {}, {}, s.{})").format(
            sql.Literal(c.check),
            sql.Literal(c.code),
            sql.Literal(c.name),
            sql.Literal(c.severity),
            sql.Literal(c.describe),
            sql.Identifier(f"_pgdr_c{i}"),
        )
        for i, c in enumerate(tp.conditions)
    )
    priority = sql.SQL(
        "CASE WHEN v.severity = 'critical' AND v.n > 0.1 * s._pgdr_rows THEN 'P0' "
        "WHEN v.severity = 'critical' THEN 'P1' WHEN v.severity = 'warning' THEN 'P2' "
        "ELSE 'P3' END"
    )
    return sql.SQL(
        "SELECT v.check_name, v.code, v.name, v.severity, {priority}, {table}, v.n, "
        "s._pgdr_rows, v.detail FROM ({select}) AS s CROSS JOIN LATERAL (VALUES {values}) "
        "AS v(check_name, code, name, severity, detail, n) WHERE v.n > 0"
    ).format(
        priority=priority,
        table=sql.Literal(tp.table.qualified),
        select=tp.select(),
        values=values,
    )


# The result columns are OUT parameters in PL/pgSQL: the queries' own column names win.
_PLPGSQL = """
#variable_conflict use_column
BEGIN
RETURN QUERY
{query};
EXCEPTION WHEN undefined_column OR undefined_table OR undefined_function THEN
  RAISE EXCEPTION USING
    MESSAGE = 'check_referential_integrity() is out of date: the schema changed since it was '
      || 'installed (' || SQLERRM || '); re-run `pgdr check install-sql`.',
    ERRCODE = 'object_not_in_prerequisite_state';
END
"""


def function_sql(
    conn: psycopg.Connection[Any],
    passes: list[TablePass],
    schema: str,
    search_path: list[str],
    origin: str,
) -> sql.Composed:
    body: sql.Composable = sql.SQL(" UNION ALL ").join(
        _pass_sql(tp) for tp in passes if tp.conditions
    )
    if not any(tp.conditions for tp in passes):
        body = sql.SQL(
            "SELECT NULL::text, NULL::text, NULL::text, NULL::text, NULL::text, NULL::text, "
            "NULL::bigint, NULL::bigint, NULL::text WHERE false"
        )
    path = sql.SQL(", ").join(sql.Identifier(p) for p in search_path)
    return sql.SQL(
        "CREATE OR REPLACE FUNCTION {schema}.{fn}() RETURNS TABLE ({columns}) "
        "LANGUAGE plpgsql STABLE SET search_path = {path} AS {body}; "
        "COMMENT ON FUNCTION {schema}.{fn}() IS {comment}"
    ).format(
        schema=sql.Identifier(schema),
        fn=sql.Identifier(FUNCTION),
        columns=sql.SQL(COLUMNS),
        path=path,
        body=sql.Literal(_PLPGSQL.format(query=body.as_string(conn))),
        comment=sql.Literal(
            f"pgdr integrity checks generated from {origin}; one row per finding. "
            "Re-run `pgdr check install-sql` after schema changes."
        ),
    )


def install_sql(
    conninfo: str, profile: Profile, schema: str = "public", vectors: bool = False
) -> Installed:
    """Create (or replace) ``schema.check_referential_integrity()`` in the target database."""
    report = Report("install-sql", redact(conninfo), profile.name)
    with connect(conninfo, autocommit=True) as conn:
        catalog = read_catalog(conn)
        plan = build_plan(profile, catalog, report, vectors=vectors)
        search_path = [profile.schema_name, *sorted(set(catalog.extensions.values()))]
        search_path = list(dict.fromkeys([*search_path, "pg_catalog"]))
        statement = function_sql(conn, plan.passes, schema, search_path, f"profile {profile.name}")
        try:
            with conn.transaction():
                conn.execute(
                    sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema))
                )
                conn.execute(
                    sql.SQL("SET LOCAL search_path = {}").format(
                        sql.SQL(", ").join(sql.Identifier(p) for p in search_path)
                    )
                )
                conn.execute(statement)
        except errors.InsufficientPrivilege as exc:
            raise RuntimeFailure(
                f"Role {catalog.role} may not create schema {schema} or its function "
                f"({str(exc).splitlines()[0]}); ask an owner to run install-sql."
            ) from exc
        except psycopg.Error as exc:
            raise RuntimeFailure(
                f"The server rejected the generated function: {str(exc).splitlines()[0]}"
            ) from exc
    skipped = [s.reason for s in report.skipped] + [f.message for f in report.findings]
    return Installed(
        f"{schema}.{FUNCTION}()",
        sum(len(tp.conditions) for tp in plan.passes),
        sum(1 for tp in plan.passes if tp.conditions),
        skipped,
    )
