"""Turning a profile and the catalog into one aggregate query per table.

Every condition pgdr checks on a table (orphans against each parent, embedding problems, profile
rules) becomes a ``count(*) FILTER (WHERE ...)`` column of a single query over that table, so a
table is read once however many rules it has. Parents are joined as (distinct) key sets, vectors
are judged from their stored size without being read (TOAST stays untouched) unless the caller
asks for their contents. Only when a pass finds embedding problems does a second, grouped query
name the groups (chatbots) that have them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from psycopg import sql

from pgdr.core.names import qualified_name
from pgdr.core.severity import FindingLevel
from pgdr.integrity.catalog import Catalog, Column, TableInfo
from pgdr.integrity.findings import Finding, Report
from pgdr.integrity.vectors import content_checks, vector_kind, wrong_dimension
from pgdr.profile import EmbeddingSource, Profile
from pgdr.profile.required import required_sql

Relation = tuple[str, tuple[str, ...], str, tuple[str, ...]]  # child, columns, parent, columns


@dataclass
class Condition:
    """One thing counted in a table's pass; a non-zero count becomes a finding."""

    check: str  # "references", "embeddings" or "rules"
    code: str
    name: str
    severity: FindingLevel
    predicate: sql.Composable
    describe: str  # "... rows of T <describe>"
    details: dict[str, Any] = field(default_factory=dict)
    joins: tuple[int, ...] = ()  # indexes into TablePass.joins this condition needs


@dataclass
class Metric:
    """A per-table (and per-group) number that is not a problem by itself."""

    name: str
    expression: sql.Composable


@dataclass
class TablePass:
    """The single query that checks one table."""

    table: TableInfo
    created_at: str | None = None
    group_by: str | None = None
    conditions: list[Condition] = field(default_factory=list)
    metrics: list[Metric] = field(default_factory=list)
    joins: list[sql.Composable] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)

    @property
    def alias(self) -> sql.Identifier:
        return sql.Identifier(self.table.name)

    def column(self, name: str) -> sql.Composed:
        return sql.SQL("{}.{}").format(self.alias, sql.Identifier(name))

    def source(self, joins: list[sql.Composable] | None = None) -> sql.Composed:
        parts: list[sql.Composable] = [
            sql.SQL("{}.{} AS {}").format(
                sql.Identifier(self.table.schema), sql.Identifier(self.table.name), self.alias
            )
        ]
        parts.extend(self.joins if joins is None else joins)
        return sql.SQL(" ").join(parts)

    def select(self) -> sql.Composed:
        """``rows, newest, metric..., condition...`` over the whole table, in one scan."""
        newest: sql.Composable = (
            sql.SQL("max({})").format(self.column(self.created_at))
            if self.created_at
            else sql.SQL("NULL::timestamptz")
        )
        items: list[sql.Composable] = [
            sql.SQL("count(*) AS _pgdr_rows"),
            sql.SQL("{} AS _pgdr_newest").format(newest),
        ]
        items += [
            sql.SQL("{} AS {}").format(m.expression, sql.Identifier(f"_pgdr_m{i}"))
            for i, m in enumerate(self.metrics)
        ]
        items += [
            sql.SQL("count(*) FILTER (WHERE {}) AS {}").format(
                c.predicate, sql.Identifier(f"_pgdr_c{i}")
            )
            for i, c in enumerate(self.conditions)
        ]
        return sql.SQL("SELECT {} FROM {}").format(sql.SQL(", ").join(items), self.source())

    def problem_groups(self, conditions: list[int], limit: int) -> sql.Composed:
        """Per group (chatbot) with a problem: ``group, rows, metric..., condition...``.

        Run only when the table's pass found problems, so a healthy table is read once; the
        groups are ranked by how many problem rows they have.
        """
        assert self.group_by is not None
        group = self.column(self.group_by)
        preds = [self.conditions[i].predicate for i in conditions]
        items: list[sql.Composable] = [sql.SQL("{}::text").format(group), sql.SQL("count(*)")]
        items += [m.expression for m in self.metrics]
        items += [sql.SQL("count(*) FILTER (WHERE {})").format(p) for p in preds]
        return sql.SQL(
            "SELECT {items} FROM {source} WHERE {group} IN "
            "(SELECT {group} FROM {source} WHERE {any}) GROUP BY {group} "
            "ORDER BY {rank} DESC, 1 LIMIT {limit}"
        ).format(
            items=sql.SQL(", ").join(items),
            source=self.source(),
            group=group,
            any=sql.SQL(" OR ").join(preds),
            rank=sql.SQL(" + ").join(
                sql.SQL("count(*) FILTER (WHERE {})").format(p) for p in preds
            ),
            limit=sql.Literal(limit),
        )

    def samples(self, condition: Condition, limit: int) -> sql.Composed:
        """Up to ``limit`` keys of rows matching one condition (only run when it found some)."""
        key_cols = self.table.primary_key or []
        key: sql.Composable
        if key_cols:
            key = sql.SQL("({})::text").format(
                sql.SQL(" || ',' || ").join(
                    sql.SQL("{}::text").format(self.column(c)) for c in key_cols
                )
            )
        else:
            key = sql.SQL("{}.ctid::text").format(self.alias)
        joins = [self.joins[i] for i in condition.joins]
        return sql.SQL("SELECT {} FROM {} WHERE {} LIMIT {}").format(
            key, self.source(joins), condition.predicate, sql.Literal(limit)
        )


@dataclass
class Plan:
    passes: list[TablePass]
    profile_tables: list[str]


def relations(catalog: Catalog, profile: Profile) -> dict[Relation, dict[str, Any]]:
    """The references to check: the catalog's foreign keys and the profile's relations (a
    relation that repeats a foreign key sets its severity)."""
    found: dict[Relation, dict[str, Any]] = {}
    for fk in catalog.foreign_keys:
        key = (fk.child, fk.child_columns, fk.parent, fk.parent_columns)
        found[key] = {
            "name": fk.name,
            "source": "catalog",
            "validated": fk.validated,
            "severity": "critical",
        }
    for rel in profile.relations:
        child = qualified_name(rel.child, profile.schema_name)
        parent = qualified_name(rel.parent, profile.schema_name)
        key = (child, tuple(rel.child_columns), parent, tuple(rel.parent_columns))
        if key in found:
            found[key]["source"] = "catalog+profile"
            found[key]["severity"] = rel.severity
        else:
            name = f"{rel.child}({','.join(rel.child_columns)})->{rel.parent}"
            found[key] = {
                "name": name,
                "source": "profile",
                "validated": None,
                "severity": rel.severity,
            }
    return found


class Planner:
    """Builds the table passes and records what could not be planned, with the reason."""

    def __init__(
        self, profile: Profile, catalog: Catalog, report: Report, vectors: bool = False
    ) -> None:
        self.profile = profile
        self.catalog = catalog
        self.report = report
        self.vectors = vectors
        self.passes: dict[str, TablePass] = {}

    # ----- helpers ------------------------------------------------------------------------
    def _table(self, name: str, check: str, what: str) -> TableInfo | None:
        info = self.catalog.find(name, self.profile.schema_name)
        if info is None:
            self.report.skip(
                check,
                f"{what} names table {qualified_name(name, self.profile.schema_name)}, "
                "which does not exist.",
            )
            return None
        if not info.readable:
            self.report.skip(
                check,
                f"role {self.catalog.role} may not read {info.qualified} (needs SELECT); "
                f"{what} was not checked.",
                table=info.qualified,
            )
            return None
        return info

    def _columns(self, info: TableInfo, columns: list[str], check: str, what: str) -> bool:
        missing = [c for c in columns if c not in info.columns]
        if missing:
            self.report.add(
                Finding(
                    check,
                    "profile_mismatch",
                    "warning",
                    f"{what} names column {info.qualified}.{missing[0]}, which does not exist; "
                    "that check was skipped (fix the profile or the schema).",
                    table=info.qualified,
                )
            )
            return False
        return True

    def _pass(self, info: TableInfo) -> TablePass:
        found = self.passes.get(info.qualified)
        if found is None:
            spec = next(
                (
                    t
                    for t in self.profile.tables
                    if qualified_name(t.name, t.schema_name) == info.qualified
                ),
                None,
            )
            created = spec.created_at if spec is not None else None
            if created is None and spec is None and "created_at" in info.columns:
                created = "created_at"
            if created is not None and created not in info.columns:
                created = None
            found = TablePass(info, created_at=created)
            self.passes[info.qualified] = found
        return found

    # ----- the checks ---------------------------------------------------------------------
    def tables(self) -> list[str]:
        names = []
        for spec in self.profile.tables:
            qualified = qualified_name(spec.name, spec.schema_name)
            names.append(qualified)
            info = self.catalog.tables.get(qualified)
            if info is None:
                self.report.add(
                    Finding(
                        "tables",
                        "table_missing",
                        "critical" if spec.critical else "warning",
                        f"Table {qualified} of profile {self.profile.name} does not exist "
                        "(dropped, renamed, or the wrong database).",
                        table=qualified,
                    )
                )
                continue
            if not info.readable:
                self.report.skip(
                    "tables",
                    f"role {self.catalog.role} may not read {qualified} (needs SELECT); "
                    "its row count and newest row were not checked.",
                    table=qualified,
                )
                continue
            tp = self._pass(info)
            if spec.created_at and spec.created_at not in info.columns:
                self._columns(info, [spec.created_at], "tables", f"Table {qualified}'s created_at")
            elif spec.created_at:
                tp.created_at = spec.created_at
        return names

    def references(self) -> None:
        for (child, ccols, parent, pcols), meta in relations(self.catalog, self.profile).items():
            what = f"Relation {meta['name']}"
            cinfo = self._table(child, "references", what)
            pinfo = self._table(parent, "references", what)
            if cinfo is None or pinfo is None:
                continue
            if not (
                self._columns(cinfo, list(ccols), "references", what)
                and self._columns(pinfo, list(pcols), "references", what)
            ):
                continue
            self._relation(cinfo, list(ccols), pinfo, list(pcols), meta)

    def _relation(
        self,
        child: TableInfo,
        ccols: list[str],
        parent: TableInfo,
        pcols: list[str],
        meta: dict[str, Any],
    ) -> None:
        tp = self._pass(child)
        index = len(tp.joins)
        alias = sql.Identifier(f"_pgdr_r{index}")
        keys = [sql.Identifier(f"_pgdr_k{i}") for i in range(len(pcols))]
        distinct = sql.SQL("") if parent.is_unique(pcols) else sql.SQL("DISTINCT ")
        inner = sql.SQL("SELECT {}{}, true AS _pgdr_present FROM {}.{} AS p").format(
            distinct,
            sql.SQL(", ").join(
                sql.SQL("p.{} AS {}").format(sql.Identifier(c), k)
                for c, k in zip(pcols, keys, strict=True)
            ),
            sql.Identifier(parent.schema),
            sql.Identifier(parent.name),
        )
        on = sql.SQL(" AND ").join(
            sql.SQL("{} = {}.{}").format(tp.column(c), alias, k)
            for c, k in zip(ccols, keys, strict=True)
        )
        tp.joins.append(sql.SQL("LEFT JOIN ({}) AS {} ON {}").format(inner, alias, on))
        not_null = sql.SQL(" AND ").join(
            sql.SQL("{} IS NOT NULL").format(tp.column(c)) for c in ccols
        )
        predicate = sql.SQL("({}._pgdr_present IS NULL AND {})").format(alias, not_null)
        validated = meta["validated"]
        state = (
            "declared in the profile, no foreign key"
            if validated is None
            else ("foreign key" if validated else "foreign key NOT VALID")
        )
        tp.conditions.append(
            Condition(
                "references",
                "orphans",
                meta["name"],
                meta["severity"],
                predicate,
                f"reference a missing {parent.qualified}({', '.join(pcols)}) through "
                f"({', '.join(ccols)}) [{meta['name']}, {state}]",
                details={
                    "parent": parent.qualified,
                    "columns": ccols,
                    "parent_columns": pcols,
                    "source": meta["source"],
                    "validated": validated,
                },
                joins=(index,),
            )
        )

    def embeddings(self) -> None:
        for src in self.profile.embeddings:
            what = f"Embedding source {src.name}"
            info = self._table(src.table, "embeddings", what)
            if info is None:
                continue
            needed = [src.vector, src.key] + ([src.group_by] if src.group_by else [])
            if not self._columns(info, needed, "embeddings", what):
                continue
            column = info.columns[src.vector]
            kind = vector_kind(column)
            if kind is None:
                self.report.skip(
                    "embeddings",
                    f"{what}: column {info.qualified}.{src.vector} is of type {column.formatted},"
                    " not a pgvector vector, real[] or double precision[]; it was not checked.",
                    table=info.qualified,
                )
                continue
            self._embedding(info, src, column, kind)

    def _embedding(self, info: TableInfo, src: EmbeddingSource, column: Column, kind: str) -> None:
        tp = self._pass(info)
        if tp.group_by is None and src.group_by:
            tp.group_by = src.group_by
        tp.sources.append(src.name)
        ref = tp.column(src.vector)
        required = src.required_when or src.filter
        base = {"source": src.name, "vector": src.vector, "dimension": src.dimension}
        tp.metrics.append(
            Metric(f"{src.name}:with_vector", sql.SQL("count({})").format(ref)),
        )
        missing = sql.SQL("({} IS NULL AND coalesce({}, false))").format(
            ref, sql.SQL(required_sql(src))
        )
        needs = "where the profile requires one" if required else "(every row needs one)"
        tp.conditions.append(
            Condition(
                "embeddings",
                "missing_vector",
                src.name,
                "critical",
                missing,
                f"have no vector in {src.vector} {needs}",
                details=base | {"required_when": required},
            )
        )
        tp.conditions.append(
            Condition(
                "embeddings",
                "wrong_dimension",
                src.name,
                "critical",
                wrong_dimension(
                    ref, info, column, kind, src.dimension, self.catalog.server_version
                ),
                f"have a vector in {src.vector} whose dimension is not {src.dimension}",
                details=base,
            )
        )
        if self.vectors:
            self._vector_contents(tp, src, column, kind)

    def _vector_contents(
        self, tp: TablePass, src: EmbeddingSource, column: Column, kind: str
    ) -> None:
        """Read each vector once (a lateral join) and count damaged and all-zero ones."""
        index = len(tp.joins)
        checks = content_checks(
            tp.column(src.vector),
            kind,
            column.type_schema if kind == "vector" else None,
            sql.Identifier(f"_pgdr_v{index}"),
        )
        tp.joins.append(checks.join)
        base = {"source": src.name, "vector": src.vector, "dimension": src.dimension}
        tp.conditions.append(
            Condition(
                "embeddings",
                "non_finite",
                src.name,
                "critical",
                checks.non_finite,
                f"have a vector in {src.vector} with NaN, infinite or NULL components",
                details=base,
                joins=(index,),
            )
        )
        tp.conditions.append(
            Condition(
                "embeddings",
                "zero_vector",
                src.name,
                "warning",
                checks.zero,
                f"have an all-zero vector in {src.vector} (no direction: cosine search "
                "cannot rank it)",
                details=base,
                joins=(index,),
            )
        )

    def rules(self) -> None:
        for rule in self.profile.rules:
            what = f"Rule {rule.name}"
            info = self._table(rule.table, "rules", what)
            if info is None:
                continue
            tp = self._pass(info)
            tp.conditions.append(
                Condition(
                    "rules",
                    "rule",
                    rule.name,
                    rule.severity,
                    sql.SQL(f"({rule.violation})"),
                    f"break rule {rule.name}: {rule.description or rule.violation}",
                    details={"violation": rule.violation},
                )
            )


def build_plan(profile: Profile, catalog: Catalog, report: Report, vectors: bool = False) -> Plan:
    """All table passes for a profile, in a stable order (profile tables first)."""
    planner = Planner(profile, catalog, report, vectors)
    names = planner.tables()
    planner.references()
    planner.embeddings()
    planner.rules()
    order = {name: i for i, name in enumerate(names)}
    passes = sorted(
        planner.passes.values(),
        key=lambda p: (order.get(p.table.qualified, 1 << 30), p.table.qualified),
    )
    return Plan(passes, names)
