"""Predicates over one row's vector (pgvector ``vector``, ``real[]`` or ``double precision[]``).

Each function returns SQL for a table pass's ``count(*) FILTER (WHERE ...)``. The dimension is
judged from the stored size, without reading TOAST, wherever that size is unambiguous
(:func:`wrong_dimension`); the contents (NaN, infinity, NULL components, all zeros) need the
value itself, detoasted once per row through one lateral join (:func:`content_checks`), and are
only planned when the caller asks for them.
"""

from __future__ import annotations

from dataclasses import dataclass

from psycopg import sql

from pgdr.integrity.catalog import Column, TableInfo

VECTOR_TYPES = {"vector": 4, "_float4": 4, "_float8": 8}
ARRAY_TYPES = {"_float4": "real[]", "_float8": "double precision[]"}
SHORT_VARLENA_MAX = 127
TOAST_TUPLE_TARGET = 2032  # PostgreSQL's default for 8 kB pages


def vector_kind(column: Column) -> str | None:
    return column.type_name if column.type_name in VECTOR_TYPES else None


def stored_sizes(kind: str, dimension: int) -> tuple[int, list[int]]:
    """(size when TOASTed out of line, sizes when inline) of a well-formed value.

    ``pg_column_size`` gives these without reading TOAST: the external size excludes the
    4-byte varlena header; inline values keep a 4-byte header, or a 1-byte one when short.
    """
    element = VECTOR_TYPES[kind]
    header = 8 if kind == "vector" else 24  # vector: dim+unused; array: ndim,offset,type,dim,lb
    full = header + element * dimension
    inline = [full]
    if full - 3 <= SHORT_VARLENA_MAX:
        inline.append(full - 3)
    return full - 4, inline


def wrong_dimension(
    ref: sql.Composable,
    table: TableInfo,
    column: Column,
    kind: str,
    dimension: int,
    server_version: int,
) -> sql.Composed:
    """Rows whose vector does not have ``dimension`` components, mostly without reading them.

    A well-formed value has a known stored size (``stored_sizes``); ``pg_column_size`` reads only
    the tuple, never TOAST. Where the size could also belong to another dimension (compressed
    values; mid-sized values that may be inline or external, which PostgreSQL 17+ tells apart
    with ``pg_column_toast_chunk_id``) the value is read and its dimension counted exactly.
    """
    external, inline = stored_sizes(kind, dimension)
    size = sql.SQL("pg_column_size({})").format(ref)
    plain = (
        sql.SQL(" AND pg_column_compression({}) IS NULL").format(ref)
        if column.compressible
        else sql.SQL("")
    )
    if _always_external(table, column, external):
        fast = sql.SQL("WHEN {size} = {ext}{plain} THEN false").format(
            size=size, ext=sql.Literal(external), plain=plain
        )
    elif server_version >= 170000:
        chunk = sql.SQL("pg_column_toast_chunk_id({})").format(ref)
        fast = sql.SQL(
            "WHEN {size} = {ext} AND {chunk} IS NOT NULL{plain} THEN false "
            "WHEN {size} IN ({inline}) AND {chunk} IS NULL{plain} THEN false"
        ).format(
            size=size,
            ext=sql.Literal(external),
            chunk=chunk,
            plain=plain,
            inline=sql.SQL(", ").join(map(sql.Literal, inline)),
        )
    else:
        # Before PostgreSQL 17 an external value of ``dimension`` and an inline one of
        # ``dimension - 1`` can have the same size; only short (1-byte header) sizes are certain.
        short = [n for n in inline if n <= SHORT_VARLENA_MAX]
        fast = sql.SQL("WHEN {size} IN ({short}){plain} THEN false").format(
            size=size,
            short=sql.SQL(", ").join(map(sql.Literal, short)) if short else sql.SQL("NULL"),
            plain=plain,
        )
    return sql.SQL("({ref} IS NOT NULL AND CASE {fast} ELSE {exact} END)").format(
        ref=ref, fast=fast, exact=_dimension_differs(ref, column, kind, dimension)
    )


def _always_external(table: TableInfo, column: Column, external: int) -> bool:
    """Values this large never stay inline uncompressed (the toaster moves them out above
    TOAST_TUPLE_TARGET), so the external size of the dimension is unambiguous."""
    return (
        column.storage in ("e", "x")
        and external > TOAST_TUPLE_TARGET
        and not any(o.startswith("toast_tuple_target=") for o in table.options)
    )


def _dimension_differs(
    ref: sql.Composable, column: Column, kind: str, dimension: int
) -> sql.Composed:
    """The exact test, reading the value: not one-dimensional with ``dimension`` components."""
    if kind == "vector":
        return sql.SQL("{}.vector_dims({}) <> {}").format(
            sql.Identifier(column.type_schema), ref, sql.Literal(dimension)
        )
    return sql.SQL("(array_ndims({r}) IS DISTINCT FROM 1 OR cardinality({r}) <> {d})").format(
        r=ref, d=sql.Literal(dimension)
    )


@dataclass(frozen=True)
class ContentChecks:
    """The lateral join that reads each vector once, and the two predicates over its result."""

    join: sql.Composed
    non_finite: sql.Composed  # NaN, infinite or NULL components
    zero: sql.Composed  # all components zero: no direction


def content_checks(
    ref: sql.Composable, kind: str, ext_schema: str | None, alias: sql.Identifier
) -> ContentChecks:
    """Read each row's vector once (as ``alias.v``) and judge its components."""
    v = sql.SQL("{}.v").format(alias)
    if kind == "vector":
        # pgvector rejects NaN and infinity on input, so a non-finite norm means the stored
        # bytes were damaged; one norm per row (one detoast) answers both questions.
        value = sql.SQL("{}.vector_norm({})").format(sql.Identifier(ext_schema or "public"), ref)
        return ContentChecks(
            sql.SQL("CROSS JOIN LATERAL (SELECT {} AS v OFFSET 0) AS {}").format(value, alias),
            sql.SQL("({v} = 'NaN'::float8 OR {v} = 'Infinity'::float8)").format(v=v),
            sql.SQL("({} = 0)").format(v),
        )
    array_type = sql.SQL(ARRAY_TYPES[kind])
    # array_cat(x, NULL) returns x detoasted once; the checks below then scan it in memory.
    join = sql.SQL(
        "CROSS JOIN LATERAL (SELECT array_cat({}, NULL::{}) AS v OFFSET 0) AS {}"
    ).format(ref, array_type, alias)
    # array_position() refuses multi-dimensional arrays (an error would lose the whole
    # pass); ``NULL = ANY`` is never true, so NULL elements are found by counting them.
    non_finite = sql.SQL(
        "({v} IS NOT NULL AND ('NaN' = ANY({v}) OR 'Infinity' = ANY({v}) "
        "OR '-Infinity' = ANY({v}) OR CASE WHEN array_ndims({v}) = 1 "
        "THEN array_position({v}, NULL) IS NOT NULL "
        "ELSE EXISTS (SELECT FROM unnest({v}) AS _e(x) WHERE _e.x IS NULL) END))"
    ).format(v=v)
    zero = sql.SQL("(cardinality({v}) > 0 AND {v} <@ '{{0}}'::{t})").format(v=v, t=array_type)
    return ContentChecks(join, non_finite, zero)
