"""pgdr: keeps a PostgreSQL + pgvector application alive through disasters.

The package is laid out by capability; each subpackage's docstring says what it owns.
"""

__version__ = "0.1.0"
