"""A table named on the command line or in a profile: ``name`` or ``schema.name``.

One reading for every command, written as SQL writes names: a part in double quotes is taken
literally (it may hold dots, spaces and ``""`` for a double quote), a bare part as typed (no
case folding, so ``My Table`` names the table ``"My Table"``). A name with a dot in it must be
quoted: ``public."my.table"``. Before, each command split names its own way, and
``restore-table --table '"a.b"'`` restored the table ``b`` of schema ``a``.

pgdr keys and shows a table as :func:`join_name` writes it, which reads back the same:
``public.chunks``, ``public."My Table"``, ``"a.b".c``. Gluing the two parts with a bare dot
made ``"a.b".c`` and ``a."b.c"`` one key, and rows went into the other table.
"""

from __future__ import annotations

import re

from pgdr.core.errors import ConfigError

NAME_MAX = 63  # bytes PostgreSQL keeps of a name; it cuts a longer one without a word
_SPACE = " \t\n\r\f\v"  # what PostgreSQL's scanner takes as white space (no other)
_PART = r'"(?:[^"]|"")+"|[^".]+'
_NAME = re.compile(rf"[{_SPACE}]*({_PART})(?:\.({_PART}))?[{_SPACE}]*")
_PLAIN = re.compile(r"[a-z_][a-z0-9_$]*")


def _unquote(part: str) -> str:
    if part.startswith('"'):
        return part[1:-1].replace('""', '"')
    return part.strip(_SPACE)


def split_table_name(text: str, default_schema: str = "public") -> tuple[str, str]:
    """``(schema, name)`` of ``text``; ``default_schema`` when it names no schema."""
    match = _NAME.fullmatch(text)
    if match is None or not match[1].strip(_SPACE) or (match[2] and not match[2].strip(_SPACE)):
        raise ConfigError(
            f"{text!r} is not a table name: give name or schema.name, with a name that holds "
            'a dot or a double quote in double quotes (public."my.table").'
        )
    first, second = _unquote(match[1]), match[2]
    return (first, _unquote(second)) if second is not None else (default_schema, first)


def quote_part(part: str) -> str:
    """``part`` bare when it is a plain lower-case identifier, else in double quotes."""
    return part if _PLAIN.fullmatch(part) else '"' + part.replace('"', '""') + '"'


def join_name(schema: str, name: str) -> str:
    """``schema.name`` as pgdr keys and shows tables: :func:`split_table_name` reads it back."""
    return f"{quote_part(schema)}.{quote_part(name)}"


def qualified_name(text: str, default_schema: str = "public") -> str:
    """The :func:`join_name` of a table named in ``text``."""
    return join_name(*split_table_name(text, default_schema))


def kept_part(part: str, room: int = NAME_MAX) -> str:
    """``part`` as PostgreSQL keeps a name: its first ``room`` bytes (:data:`NAME_MAX`), whole
    characters."""
    return part.encode()[:room].decode(errors="ignore")
