"""The one definition of "this vector is required", and so of "migration 005 is finished".

A row of an embedding source **requires** a vector when the profile's ``required_when`` (or else
its ``filter``) holds; a source without either requires one on every row. Migration 005 is
finished when no required row lacks its vector. NULL vectors on rows that are *not* required
(ConvoAI: chunks of chatbots that are not ``ready``, disabled knowledge-base entries) are not
missing; they are reported apart, by cause (the group's status, or the filter), so the runbook's
raw ``COUNT(*) FILTER (WHERE embedding IS NULL)`` always equals ``missing + not_required``.

``reembed``'s verification, ``inventory`` / ``inventory compare`` and the query docs/embeddings.md
shows all use these expressions; ``pgdr check`` (``missing_vector``) uses ``required_sql`` too.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

from pgdr.profile.model import EmbeddingSource


def required_sql(src: EmbeddingSource) -> str:
    """The SQL predicate (over the source's table, unaliased) of rows that require a vector."""
    when = src.required_when or src.filter
    return f"({when})" if when else "true"


def table_ref(src: EmbeddingSource, schema: str) -> sql.Composed:
    name = src.table if "." in src.table else f"{schema}.{src.table}"
    return sql.SQL(".").join(sql.Identifier(p) for p in name.split(".", 1))


def counts_query(
    src: EmbeddingSource, schema: str, where: sql.Composable | None = None
) -> sql.Composed:
    """``group, rows, with_vector, missing, not_required`` per group (one group when the source
    has no ``group_by``): the shared verification query."""
    vec = sql.Identifier(src.vector)
    group: sql.Composable = (
        sql.SQL("{}::text").format(sql.Identifier(src.group_by))
        if src.group_by
        else sql.SQL("NULL::text")
    )
    required = sql.SQL(required_sql(src))
    return sql.SQL(
        "SELECT {group}, count(*), count({vec}), "
        "count(*) FILTER (WHERE {vec} IS NULL AND coalesce({req}, false)), "
        "count(*) FILTER (WHERE {vec} IS NULL AND NOT coalesce({req}, false)) "
        "FROM {table} WHERE {where} GROUP BY 1"
    ).format(
        group=group,
        vec=vec,
        req=required,
        table=table_ref(src, schema),
        where=where if where is not None else sql.SQL("true"),
    )


def not_required_causes(
    conn: psycopg.Connection[Any],
    src: EmbeddingSource,
    schema: str,
    where: sql.Composable | None = None,
) -> list[dict[str, Any]]:
    """NULL vectors that are not required, by cause: ``{cause, groups, vectors, sentence}``."""
    status = src.status
    if src.group_by and status is not None:
        cause: sql.Composable = sql.SQL("coalesce(_pgdr_st.{}::text, 'missing')").format(
            sql.Identifier(status.column)
        )
        join: sql.Composable = sql.SQL(
            "LEFT JOIN {} AS _pgdr_st ON _pgdr_st.{}::text = {}::text"
        ).format(
            table_ref(src.model_copy(update={"table": status.table}), schema),
            sql.Identifier(status.key),
            sql.Identifier(src.group_by),
        )
    else:
        cause, join = sql.Literal("not required by the profile"), sql.SQL("")
    table = table_ref(src, schema)
    vec = sql.SQL("{}.{}").format(table, sql.Identifier(src.vector))
    group = (
        sql.SQL("{}.{}").format(table, sql.Identifier(src.group_by))
        if src.group_by
        else sql.SQL("NULL::text")
    )
    query = sql.SQL(
        "SELECT {cause}, count(DISTINCT {group}), count(*) FROM {table} {join} "
        "WHERE {vec} IS NULL AND NOT coalesce({req}, false) AND {where} GROUP BY 1 ORDER BY 3 DESC"
    ).format(
        cause=cause,
        group=group,
        table=table_ref(src, schema),
        join=join,
        vec=vec,
        req=sql.SQL(required_sql(src)),
        where=where if where is not None else sql.SQL("true"),
    )
    out = []
    for reason, groups, vectors in conn.execute(query):
        out.append(
            {
                "cause": str(reason),
                "groups": int(groups),
                "vectors": int(vectors),
                "sentence": _sentence(src, str(reason), int(groups), int(vectors)),
            }
        )
    return out


def _sentence(src: EmbeddingSource, cause: str, groups: int, vectors: int) -> str:
    if src.group_by and src.status is not None:
        who = (
            f"{groups:,} {src.status.table}"
            if groups != 1
            else f"1 {src.status.table[:-1] or src.status.table}"
        )
        return (
            f"{vectors:,} vectors of {who} in status {cause} were not regenerated "
            f"({src.name}: not required by the profile)."
        )
    return f"{vectors:,} rows of {src.name} have no vector and do not need one ({cause})."
