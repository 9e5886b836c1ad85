"""A profile for any database, discovered from its catalog when none was given.

Without ``--profile`` or ``PGDR_PROFILE`` pgdr does not assume the application: the built-in
ConvoAI profile applies when every one of its tables exists; otherwise the profile is discovered
from the catalog (``discover``):

- every readable user table (outside extensions' schemas), with its ``created_at``-like column;
- every foreign key as a critical relation (so a relation stays checked after a migration drops
  its key, once the profile is written down with ``pgdr profile init``);
- relations the naming convention suggests where no foreign key exists (``invoice_line.
  invoice_id`` -> ``invoice(id)``), as **warnings**: they are guesses;
- vector and ``real[]`` / ``double precision[]`` columns as embedding sources, with their
  dimension from the column type (``vector(1536)``) or, for arrays, from the most common length
  among up to 100 stored values (the only rows discovery reads).

Discovery never writes; ``as_toml`` renders the result for the user to edit.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from pgdr.core.errors import ConfigError
from pgdr.core.names import join_name
from pgdr.integrity.catalog import Catalog, Column, TableInfo, read_catalog
from pgdr.pool import connect
from pgdr.profile import EmbeddingSource, Profile, Relation, TableSpec, load_profile
from pgdr.profile.model import load_text

CREATED_AT = (
    "created_at",
    "inserted_at",
    "created_on",
    "creation_time",
    "created",
    "createdat",
    "create_time",
    "date_created",
)
TIME_TYPES = ("timestamptz", "timestamp", "date")
KEY_TYPES_COMPATIBLE = {"int2", "int4", "int8", "numeric"}
VECTOR_TYPES = ("vector", "_float4", "_float8")
TEXT_NAMES = ("content", "text", "chunk", "body", "document", "question", "title", "name")
_DIMENSION = re.compile(r"\((\d+)\)")


@dataclass
class Discovery:
    """A profile and what the user should know about how it was made."""

    profile: Profile
    notes: list[str] = field(default_factory=list)

    @property
    def toml(self) -> str:
        return as_toml(self.profile, self.notes)


def _created_at(info: TableInfo) -> str:
    for name in CREATED_AT:
        column = info.columns.get(name)
        if column is not None and column.type_name in TIME_TYPES:
            return name
    return ""


def _candidates(stem: str) -> list[str]:
    names = [stem, stem + "s", stem + "es"]
    if stem.endswith("y"):
        names.append(stem[:-1] + "ies")
    return names


def _same_kind(a: Column, b: Column) -> bool:
    ints = KEY_TYPES_COMPATIBLE
    return a.type_name == b.type_name or (a.type_name in ints and b.type_name in ints)


def _by_convention(catalog: Catalog, tables: list[TableInfo]) -> list[Relation]:
    """``<parent>_id`` columns without a foreign key, whose parent table's key matches."""
    declared = {(fk.child, fk.child_columns) for fk in catalog.foreign_keys}
    found: list[Relation] = []
    for info in tables:
        for column in info.columns.values():
            if not column.name.endswith("_id") or (info.qualified, (column.name,)) in declared:
                continue
            stem = column.name[: -len("_id")]
            for name in _candidates(stem):
                parent = catalog.tables.get(join_name(info.schema, name))
                if parent is None or parent.primary_key != ["id"] or parent is info:
                    continue
                if _same_kind(column, parent.columns["id"]):
                    found.append(
                        Relation(
                            child=info.qualified,
                            child_columns=[column.name],
                            parent=parent.qualified,
                            parent_columns=["id"],
                            severity="warning",
                        )
                    )
                    break
    return found


def _array_dimension(conn: psycopg.Connection[Any], info: TableInfo, column: str) -> int | None:
    query = sql.SQL(
        "SELECT cardinality({c}) FROM {s}.{t} WHERE {c} IS NOT NULL AND array_ndims({c}) = 1 "
        "LIMIT 100"
    ).format(c=sql.Identifier(column), s=sql.Identifier(info.schema), t=sql.Identifier(info.name))
    lengths = Counter(int(r[0]) for r in conn.execute(query))
    return lengths.most_common(1)[0][0] if lengths else None


def _embeddings(
    conn: psycopg.Connection[Any], tables: list[TableInfo], notes: list[str]
) -> list[EmbeddingSource]:
    sources: list[EmbeddingSource] = []
    for info in tables:
        for column in info.columns.values():
            if column.type_name not in VECTOR_TYPES:
                continue
            where = f"{info.qualified}.{column.name}"
            match = _DIMENSION.search(column.formatted)
            dimension = (
                int(match.group(1))
                if column.type_name == "vector" and match
                else (
                    _array_dimension(conn, info, column.name)
                    if column.type_name != "vector"
                    else None
                )
            )
            if dimension is None or len(info.primary_key) != 1:
                why = "no dimension (untyped and no stored vector)" if dimension is None else ""
                why = why or "no single-column primary key"
                notes.append(f"Vector column {where} is not an embedding source: {why}.")
                continue
            text = next((n for n in TEXT_NAMES if n in info.columns), "''")
            sources.append(
                EmbeddingSource(
                    name=info.name if column.name == "embedding" else f"{info.name}_{column.name}",
                    table=info.qualified,
                    key=info.primary_key[0],
                    text=text,
                    vector=column.name,
                    dimension=dimension,
                )
            )
    return sources


def discover(conn: psycopg.Connection[Any], catalog: Catalog, database: str) -> Discovery:
    """A profile of everything the catalog shows (see the module docstring)."""
    notes: list[str] = []
    hidden = {schema for name, schema in catalog.extensions.items() if schema != "public"}
    tables = [
        t for t in catalog.tables.values() if t.readable and t.schema not in hidden | {"pgdr"}
    ]
    specs = [
        TableSpec.model_validate({"name": t.name, "schema": t.schema, "created_at": _created_at(t)})
        for t in tables
    ]
    relations = [
        Relation(
            child=fk.child,
            child_columns=list(fk.child_columns),
            parent=fk.parent,
            parent_columns=list(fk.parent_columns),
        )
        for fk in catalog.foreign_keys
    ]
    guessed = _by_convention(catalog, tables)
    for rel in guessed:
        notes.append(
            f"No foreign key: {rel.child}({rel.child_columns[0]}) -> {rel.parent}(id) is a guess "
            "from the column's name, checked as a warning."
        )
    profile = Profile.model_validate(
        {
            "name": f"discovered:{database}",
            "description": f"Discovered from the catalog of database {database}; edit it.",
            "tables": [s.model_dump(by_alias=True) for s in specs],
            "relations": [r.model_dump() for r in relations + guessed],
            "embeddings": [e.model_dump() for e in _embeddings(conn, tables, notes)],
        }
    )
    notes.insert(
        0,
        f"No profile given: discovered one from the catalog ({len(specs)} tables, "
        f"{len(relations)} foreign keys, {len(guessed)} relations by naming convention); "
        "`pgdr profile init` writes it down for editing.",
    )
    return Discovery(profile, notes)


def is_convoai(catalog: Catalog, convoai: Profile) -> bool:
    """Most of ConvoAI's tables exist: it is ConvoAI, and a missing one is a finding (a dropped
    table must not turn the database into "some other application")."""
    present = sum(catalog.find(t.name, t.schema_name) is not None for t in convoai.tables)
    return present * 2 > len(convoai.tables)


def resolve(conn: psycopg.Connection[Any], catalog: Catalog) -> Discovery:
    """ConvoAI when (most of) its tables are there, otherwise a discovered profile."""
    convoai = load_profile("convoai")
    if is_convoai(catalog, convoai):
        note = (
            "No profile given: the ConvoAI tables are present, so the built-in convoai "
            "profile applies."
        )
        return Discovery(convoai, [note])
    row = conn.execute("SELECT current_database()").fetchone()
    return discover(conn, catalog, str(row[0]) if row else "?")


def profile_for(conninfo: str, forced_discovery: bool = False) -> Discovery:
    """The profile of the database at ``conninfo`` when the user named none."""
    with connect(conninfo, autocommit=True) as conn:
        conn.execute("SET default_transaction_read_only = on")
        catalog = read_catalog(conn)
        if forced_discovery:
            row = conn.execute("SELECT current_database()").fetchone()
            return discover(conn, catalog, str(row[0]) if row else "?")
        return resolve(conn, catalog)


def write_discovered(conninfo: str, out: Path | None, force: bool) -> Discovery:
    """``pgdr profile init``: discover (always, even where ConvoAI applies) and write ``out``
    (never over an existing file without ``force``); the TOML reads back as the same profile."""
    if out is not None and out.exists() and not force:
        raise ConfigError(f"{out} exists; pass --force to replace it.")
    found = profile_for(conninfo, forced_discovery=True)
    text = found.toml
    assert load_text(text, "discovered") == found.profile
    if out is not None:
        tmp = out.with_name(out.name + ".tmp")
        tmp.write_text(text)
        tmp.replace(out)
    return found


def as_toml(profile: Profile, notes: list[str]) -> str:
    """The profile as an editable TOML file (the format of docs/profiles.md)."""
    lines = [f"# {note}" for note in notes]
    lines += [f"name = {_q(profile.name)}", f"description = {_q(profile.description)}", ""]
    for t in profile.tables:
        lines += ["[[tables]]", f"name = {_q(t.name)}", f"schema = {_q(t.schema_name)}"]
        lines += [f"created_at = {_q(t.created_at or '')}", ""]
    for r in profile.relations:
        lines += ["[[relations]]", f"child = {_q(r.child)}"]
        lines += [f"child_columns = {_list(r.child_columns)}", f"parent = {_q(r.parent)}"]
        lines += [f"parent_columns = {_list(r.parent_columns)}", f"severity = {_q(r.severity)}"]
        lines.append("")
    for e in profile.embeddings:
        lines += ["[[embeddings]]", f"name = {_q(e.name)}", f"table = {_q(e.table)}"]
        lines += [f"key = {_q(e.key)}", f"text = {_q(e.text)}  # the text that was embedded"]
        lines += [f"vector = {_q(e.vector)}", f"dimension = {e.dimension}", ""]
    return "\n".join(lines)


def _q(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _list(items: list[str]) -> str:
    return "[" + ", ".join(_q(i) for i in items) + "]"
