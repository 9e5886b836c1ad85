"""The profile file format and its loader.

``load_profile("convoai")`` gives a built-in profile; any other argument is a path to a TOML file.
Unknown keys are errors, so a typo never silently disables a check.
"""

from __future__ import annotations

import tomllib
from importlib import resources
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from pgdr.core.errors import ConfigError
from pgdr.core.severity import FindingLevel

BUILTIN_PROFILES = ("convoai",)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TableSpec(_Strict):
    """A table the application cannot lose."""

    name: str
    schema_name: str = Field("public", alias="schema")
    critical: bool = True
    created_at: str | None = "created_at"
    export: bool = False

    @property
    def qualified(self) -> str:
        return f'"{self.schema_name}"."{self.name}"'


class Relation(_Strict):
    """A parent/child relation that must hold even when no foreign key enforces it."""

    child: str
    child_columns: list[str]
    parent: str
    parent_columns: list[str] = ["id"]
    severity: FindingLevel = "critical"

    @model_validator(mode="after")
    def _same_arity(self) -> Relation:
        if len(self.child_columns) != len(self.parent_columns):
            raise ValueError("child_columns and parent_columns must have the same length")
        return self


class StatusColumn(_Strict):
    """The status a source's group moves through while it is re-embedded (runbook step 1)."""

    table: str
    key: str = "id"
    column: str = "status"
    ready: str = "ready"
    working: str = "embedding"
    failed: str = "failed"
    reason_column: str | None = None


class EmbeddingSource(_Strict):
    """Where vectors come from: a text expression over a table, and where they go."""

    name: str
    table: str
    key: str = "id"
    text: str
    vector: str = "embedding"
    dimension: int = Field(gt=0)
    group_by: str | None = None
    filter: str | None = None
    required_when: str | None = None
    status: StatusColumn | None = None


class Rule(_Strict):
    """A custom check: rows of ``table`` matching ``violation`` are findings."""

    name: str
    table: str
    violation: str
    severity: FindingLevel = "warning"
    description: str = ""


class Profile(_Strict):
    name: str
    description: str = ""
    schema_name: str = Field("public", alias="schema")
    tables: list[TableSpec] = []
    relations: list[Relation] = []
    embeddings: list[EmbeddingSource] = []
    rules: list[Rule] = []

    def table(self, name: str) -> TableSpec:
        for spec in self.tables:
            if spec.name == name:
                return spec
        raise ConfigError(f"Profile {self.name!r} has no table {name!r}.")

    def embedding_source(self, name: str) -> EmbeddingSource:
        for source in self.embeddings:
            if source.name == name:
                return source
        names = ", ".join(s.name for s in self.embeddings) or "none"
        raise ConfigError(
            f"Profile {self.name!r} has no embedding source {name!r} (it has: {names})."
        )


def load_text(text: str, origin: str) -> Profile:
    """A profile from TOML text (``origin`` names it in error sentences)."""
    return _read(text, origin)


def _read(text: str, origin: str) -> Profile:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"Profile {origin} is not valid TOML: {exc}.") from exc
    try:
        return Profile.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ConfigError(f"Profile {origin} is invalid at {where}: {first['msg']}.") from exc


def load_profile(name_or_path: str) -> Profile:
    """A built-in profile by name, or a profile file by path."""
    if name_or_path in BUILTIN_PROFILES:
        text = resources.files("pgdr.profile").joinpath(f"{name_or_path}.toml").read_text()
        return _read(text, name_or_path)
    path = Path(name_or_path)
    if not path.is_file():
        known = ", ".join(BUILTIN_PROFILES)
        raise ConfigError(
            f"Profile {name_or_path!r} is neither a built-in profile ({known}) nor a file."
        )
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"Profile {path} cannot be read as UTF-8 text: {exc}.") from exc
    return _read(text, str(path))
