"""Continuous WAL: streaming with pg_receivewal, archive/restore commands, setup and status.

Owns getting every WAL segment of the protected server into the repository (sealed, checked
against the cluster's identity), the timeline histories and the chain a point-in-time restore
follows, the server settings each mode needs, and which WAL retention may remove.

Streaming (:mod:`pgdr.wal.stream`) is not re-exported: it needs psycopg, which a restore reading
the archive starts faster without.
"""

from pgdr.wal.archive import WalArchive, object_key
from pgdr.wal.chain import Chain, choose_timeline
from pgdr.wal.names import format_lsn, parse_lsn

__all__ = [
    "Chain",
    "WalArchive",
    "choose_timeline",
    "format_lsn",
    "object_key",
    "parse_lsn",
]
