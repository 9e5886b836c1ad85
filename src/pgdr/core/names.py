"""A table named on the command line or in a profile: ``name`` or ``schema.name``.

One reading for every command, written as SQL writes names: a part in double quotes is taken
literally (it may hold dots, spaces and ``""`` for a double quote), a bare part as typed (no
case folding, so ``My Table`` names the table ``"My Table"``). A name with a dot in it must be
quoted: ``public."my.table"``. Before, each command split names its own way, and
``restore-table --table '"a.b"'`` restored the table ``b`` of schema ``a``.
"""

from __future__ import annotations

import re

from pgdr.core.errors import ConfigError

_PART = r'"(?:[^"]|"")+"|[^".]+'
_NAME = re.compile(rf"\s*({_PART})(?:\.({_PART}))?\s*")


def _unquote(part: str) -> str:
    if part.startswith('"'):
        return part[1:-1].replace('""', '"')
    return part.strip()


def split_table_name(text: str, default_schema: str = "public") -> tuple[str, str]:
    """``(schema, name)`` of ``text``; ``default_schema`` when it names no schema."""
    match = _NAME.fullmatch(text)
    if match is None or not match[1].strip():
        raise ConfigError(
            f"{text!r} is not a table name: give name or schema.name, with a name that holds "
            'a dot or a double quote in double quotes (public."my.table").'
        )
    first, second = _unquote(match[1]), match[2]
    return (first, _unquote(second)) if second is not None else (default_schema, first)


def qualified_name(text: str, default_schema: str = "public") -> str:
    """``schema.name`` of ``text`` as pgdr keys tables (each part as stored, unquoted)."""
    schema, name = split_table_name(text, default_schema)
    return f"{schema}.{name}"
