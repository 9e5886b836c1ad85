"""The ground floor: what every pgdr package may use, and which uses none of them.

- ``errors``: the error tree and the documented exit codes;
- ``severity``: the one P0–P3 scale (a finding's critical/warning/info is a view of it);
- ``time``: one clock (timezone-aware UTC) and one timestamp format (ISO 8601);
- ``connect``: one ``connect()`` for every database connection, psycopg errors as sentences,
  redaction of connection strings;
- ``runner``: one way to run PostgreSQL programs (secrets via environment, stderr → a sentence);
- ``records``: one record store (atomic 0600 JSON files under ``$PGDR_HOME/records``);
- ``log``: stdlib logging set up once (rich on a terminal, plain or JSON lines otherwise);
- ``output``: the report writers (human, JSON) and escaping of user text before rich sees it;
- ``memory``: freed blocks of megabytes kept for reuse (the CLI's first step), not faulted in
  afresh for every chunk.

The import contract in pyproject.toml (``lint-imports``) keeps ``pgdr.core`` at the bottom.
"""
