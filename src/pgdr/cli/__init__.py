"""The ``pgdr`` command: a thin front door over the capability packages.

Each capability has one module here registering a typer sub-app; :mod:`pgdr.cli.app` assembles
them and turns :class:`pgdr.core.errors.PgdrError` into one sentence and a documented exit code.
"""
