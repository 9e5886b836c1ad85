"""The runbook's logical layer: dumps, CSV exports and single-table restores.

Dumps are a second kind of backup in the same repository (``dumps/<id>/``): ``pg_dump``'s
custom-format stream cut into the same sealed chunks (zstd + AES-256-GCM) under an authenticated
manifest, written last. The ``pg_dump``/``pg_restore`` used always match the server's (or the
dump's) major version; a dump from a newer PostgreSQL than any installed binaries is refused in
one sentence before anything is read.
"""
