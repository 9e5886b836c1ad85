"""Named repositories and what a repository holds.

Configuration: ``[repositories.NAME]`` tables in ``pgdr.toml`` (``url``, S3 ``endpoint``,
``region``, ``access_key_id_file``, ``secret_access_key_file``, ``chunk_size_mb`` and the
retention keys ``recovery_window_days``, ``daily_days``, ``weekly_days``, ``keep_days``).
With none, the repository ``primary`` is ``$PGDR_HOME/repository``; ``PGDR_REPO=URL``
overrides the URL of ``primary`` (environment wins over the file, as everywhere in pgdr).

Layout of a repository (object keys)::

    repository.json                      format, creation time, system identifier of the cluster
    lock.json                            who is writing (pid, host, time); removed when done
    backups/<id>/chunks/000001 ...       sealed pieces of the pg_basebackup tar stream
    backups/<id>/backup_manifest         sealed copy of PostgreSQL's backup_manifest
    backups/<id>/manifest.json           written last: the backup exists once this exists
    dumps/<id>/chunks/... manifest.json  logical dumps (``pgdr dump``), laid out like backups
    records/restore-tests/<id>/<time>.json   results of ``backup verify --restore-test``
    records/backup-failures/<id>.json        backups that failed, for the monitor

A backup directory without ``manifest.json`` is incomplete: never listed, never restored, and
removed by the next ``pgdr backup`` or ``pgdr prune`` while they hold the lock (so never while
another writer does).

Listing authenticates every manifest: one that does not parse, fails its HMAC, names another
backup or belongs to another database system is a *damaged* row (``scan_backups``), never
"latest", never restored, never deleted by retention; the good ones stay usable.

Keys: reading (``master_key``) never creates a key; only ``writing_key`` may generate the
embedded default, and only for a repository holding nothing sealed yet. A repository whose
backups were sealed by other keys refuses a writer's key unless ``new_key`` is given.

The lock (``locked``) is atomic: on a local store an ``flock`` (``filelock``) on ``lock``, held
for the operation and released by the kernel if the process dies; on S3 a conditional create of
``lock.json`` (``If-None-Match: *``), a stale lock taken over by a conditional delete
(``If-Match`` its ETag) so two takers cannot both win. A store that ignores conditional writes
is refused for writing, with one sentence. While held, a thread of the holder refreshes it every
``LOCK_REFRESH_S`` whatever the operation does: a long copy, prune or key rotation on S3 is
never taken for stale by another host.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from pgdr.backup.manifest import BACKUPS, DUMPS, Manifest, format_time, now_utc
from pgdr.cluster.manager import pid_alive
from pgdr.config.settings import PgdrSettings, load_toml
from pgdr.core.errors import ConfigError, PgdrError, RuntimeFailure
from pgdr.core.log import logger
from pgdr.crypto import MasterKey, load_master_key
from pgdr.crypto.keys import MissingMasterKey
from pgdr.crypto.pipeline import Background, Stopped
from pgdr.storage import ObjectNotFound, ObjectStore, open_store
from pgdr.storage.base import HeldLock, LockBusy, LockLost

log = logger(__name__)

DEFAULT_REPOSITORY = "primary"
REPOSITORY_FORMAT = 1
LOCK_KEY = "lock.json"
INFO_KEY = "repository.json"
NOUNS = {BACKUPS: ("backup", "pgdr backup list"), DUMPS: ("dump", "pgdr dump list")}
WAL_KEYRING = "wal/keyring.json"  # the WAL data key, wrapped by the master key (see pgdr.wal)
RESTORE_TESTS = "records/restore-tests/"
BACKUP_FAILURES = "records/backup-failures/"
LOCK_STALE_AFTER_S = 15 * 60  # a lock from another host not refreshed for this long is stale
LOCK_REFRESH_S = 60  # how often a held lock is refreshed, whatever the operation is doing
DEFAULT_CHUNK_MB = 8


@dataclass(frozen=True)
class RetentionPolicy:
    """The runbook's terms: PITR window, daily and weekly snapshots (all in days).

    ``keep_days`` is how long a backup taken with ``--keep`` (before a major change) stays in
    this tier: 0 means forever.
    """

    recovery_window_days: int = 7
    daily_days: int = 30
    weekly_days: int = 0
    keep_days: int = 0

    def as_dict(self) -> dict[str, int]:
        return {
            "recovery_window_days": self.recovery_window_days,
            "daily_days": self.daily_days,
            "weekly_days": self.weekly_days,
            "keep_days": self.keep_days,
        }


RETENTION_KEYS = ("recovery_window_days", "daily_days", "weekly_days", "keep_days")
MAX_DAYS = 36_500  # a retention window beyond this is a typo (and past datetime's range)
KNOWN_KEYS = {
    "url",
    "endpoint",
    "region",
    "access_key_id_file",
    "secret_access_key_file",
    "chunk_size_mb",
    *RETENTION_KEYS,
}


@dataclass(frozen=True)
class RepoConfig:
    """One configured repository."""

    name: str
    url: str
    options: Mapping[str, Any] = field(default_factory=dict)
    retention: RetentionPolicy = field(default_factory=RetentionPolicy)
    chunk_size: int = DEFAULT_CHUNK_MB * 1024 * 1024
    source: str = "default"


def _retention(name: str, table: Mapping[str, Any]) -> RetentionPolicy:
    values: dict[str, int] = {}
    for key in RETENTION_KEYS:
        if key in table:
            value = table[key]
            if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_DAYS:
                raise ConfigError(
                    f"repositories.{name}.{key} must be a whole number of days from 0 to "
                    f"{MAX_DAYS:,} (a hundred years)."
                )
            values[key] = value
    return RetentionPolicy(**values)


def _chunk_size(name: str, table: Mapping[str, Any]) -> int:
    value = table.get("chunk_size_mb", DEFAULT_CHUNK_MB)
    if not isinstance(value, int | float) or isinstance(value, bool) or not 1 <= value <= 256:
        raise ConfigError(f"repositories.{name}.chunk_size_mb must be between 1 and 256.")
    return int(value * 1024 * 1024)


def load_repositories(
    settings: PgdrSettings, toml: Mapping[str, Any] | None = None
) -> dict[str, RepoConfig]:
    """Every configured repository by name; ``primary`` always exists."""
    if toml is None:
        toml, _path = load_toml(settings)
    tables = toml.get("repositories", {})
    if not isinstance(tables, dict):
        raise ConfigError("[repositories] in pgdr.toml must hold one table per repository.")
    repos: dict[str, RepoConfig] = {}
    for name, table in tables.items():
        if not isinstance(table, dict) or not isinstance(table.get("url"), str):
            raise ConfigError(f"[repositories.{name}] in pgdr.toml needs a url.")
        unknown = set(table) - KNOWN_KEYS
        if unknown:
            raise ConfigError(
                f"[repositories.{name}] has unknown keys: {', '.join(sorted(unknown))}."
            )
        repos[name] = RepoConfig(
            name,
            table["url"],
            table,
            _retention(name, table),
            _chunk_size(name, table),
            "pgdr.toml",
        )
    primary = repos.get(DEFAULT_REPOSITORY)
    if settings.repo:
        base = primary or RepoConfig(DEFAULT_REPOSITORY, settings.repo)
        repos[DEFAULT_REPOSITORY] = RepoConfig(
            DEFAULT_REPOSITORY,
            settings.repo,
            base.options,
            base.retention,
            base.chunk_size,
            "PGDR_REPO",
        )
    elif primary is None:
        repos[DEFAULT_REPOSITORY] = RepoConfig(
            DEFAULT_REPOSITORY, str(settings.home / "repository")
        )
    return repos


def repo_config(settings: PgdrSettings, name: str | None = None) -> RepoConfig:
    """The repository called ``name`` (default ``primary``)."""
    repos = load_repositories(settings)
    name = name or DEFAULT_REPOSITORY
    if name in repos:
        return repos[name]
    raise ConfigError(
        f"There is no repository named {name!r}; configured: {', '.join(sorted(repos))} "
        "(add a [repositories.NAME] table to pgdr.toml)."
    )


@dataclass(frozen=True)
class DamagedManifest:
    """A backup directory whose manifest cannot be trusted, and why."""

    backup_id: str
    problem: str
    wrong_key: bool = False  # sealed by another master key than the one in use

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.backup_id, "problem": self.problem, "wrong_key": self.wrong_key}

    def error(self) -> PgdrError:
        """The error to stop with when this backup was asked for."""
        if self.wrong_key:
            return ConfigError(self.problem)
        return RuntimeFailure(f"Backup {self.backup_id} cannot be trusted: {self.problem}")


def unreadable_error(
    repo_name: str, key_id: str, found: list[DamagedManifest], noun: str
) -> PgdrError:
    """The error a listing ends with when some of its ``noun`` ("backup", "dump") cannot be read:
    the listing is partial, so it is not a pass (and never "holds none")."""
    ids = ", ".join(d.backup_id for d in found)
    if all(d.wrong_key for d in found):
        return ConfigError(
            f"The key in use (id {key_id}) does not open {len(found)} {noun}(s) in the "
            f"repository {repo_name}: {ids}; use the key that sealed them."
        )
    return RuntimeFailure(
        f"{len(found)} {noun}(s) in the repository {repo_name} cannot be read or trusted: {ids}."
    )


@dataclass
class LockInfo:
    pid: int
    host: str
    operation: str
    started_at: float
    refreshed_at: float

    def stale(self) -> bool:
        if self.host == socket.gethostname():
            return not pid_alive(self.pid)
        return time.time() - self.refreshed_at > LOCK_STALE_AFTER_S


class Repository:
    """A repository opened for work: its store, its name, and the master key."""

    def __init__(self, config: RepoConfig, store: ObjectStore, settings: PgdrSettings) -> None:
        self.config = config
        self.store = store
        self.settings = settings
        self._master: MasterKey | None = None
        self.key_note: str | None = None

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def url(self) -> str:
        return self.store.url

    # ----- keys -----------------------------------------------------------------------------
    @property
    def master_key(self) -> MasterKey:
        """The key for reading: never created here."""
        if self._master is None:
            try:
                self._master, self.key_note = load_master_key(self.settings.home)
            except MissingMasterKey as exc:
                raise self._missing_key(exc) from None
        return self._master

    def writing_key(self, new_key: bool = False) -> MasterKey:
        """The key a backup seals with: generated only for a repository with nothing sealed.

        A repository whose backups or WAL were sealed by other keys refuses it unless
        ``new_key``: sealing new backups under a key nobody keeps is how backups are lost.
        """
        if self._master is not None:
            return self._master
        sealed = self.sealed_key_ids()
        try:
            key, note = load_master_key(self.settings.home, generate=new_key or not sealed)
        except MissingMasterKey as exc:
            raise self._missing_key(
                exc, "; or give --new-key to seal new backups with a new key"
            ) from None
        if sealed and key.key_id not in sealed and not new_key:
            raise ConfigError(
                f"The master key in use (id {key.key_id}, from {key.origin}) is not the key of "
                f"the backups in the repository {self.name} (key id {', '.join(sorted(sealed))}); "
                "use that key, or give --new-key to seal new backups with this one."
            )
        self._master, self.key_note = key, note
        return key

    def _missing_key(self, exc: MissingMasterKey, hint: str = "") -> ConfigError:
        sealed = self.sealed_key_ids()
        what = (
            f"backups in this repository were sealed with key id {', '.join(sorted(sealed))}"
            if sealed
            else "this repository holds nothing sealed yet"
        )
        return ConfigError(
            f"No master key at {exc.path}; {what}; restore that key file or set "
            f"PGDR_ENCRYPTION_KEY_FILE{hint}."
        )

    def sealed_key_ids(self) -> set[str]:
        """Ids of the master keys that wrapped this repository's data keys (of backups, dumps,
        exports and the WAL; unauthenticated)."""
        ids: set[str] = set()
        for area in (BACKUPS, DUMPS):
            for object_id in self.complete_ids(area):
                try:
                    raw = self.store.get(self.manifest_key(object_id, area))
                    ids.add(Manifest.from_json(raw, object_id).key_id)
                except PgdrError:
                    continue
        try:
            keyring = json.loads(self.store.get(WAL_KEYRING))
            ids.add(str(keyring["body"]["wal_key"]["master_key_id"]))
        except (ObjectNotFound, ValueError, KeyError, TypeError):
            pass
        ids.discard("")
        return ids

    def use_master_key(self, key: MasterKey) -> None:
        self._master = key

    # ----- repository record ----------------------------------------------------------------
    def info_record(self) -> dict[str, Any] | None:
        try:
            data: dict[str, Any] = json.loads(self.store.get(INFO_KEY))
        except ObjectNotFound:
            return None
        except ValueError as exc:
            raise RuntimeFailure(f"{INFO_KEY} in the repository {self.url} is damaged.") from exc
        return data

    def exists(self) -> bool:
        """Whether anything was ever stored here: the repository's record (a first backup,
        dump, WAL or ``repo init`` writes it), or objects of an older pgdr without it."""
        if self.store.exists(INFO_KEY):
            return True
        return next(iter(self.store.list()), None) is not None

    def initialise(self) -> bool:
        """Create the repository (and bucket); False when it already existed."""
        self.store.prepare()
        if self.info_record() is not None:
            return False
        record = {"format": REPOSITORY_FORMAT, "created_at": format_time(now_utc())}
        self._put_info(record | {"system_identifier": None})
        return True

    def _put_info(self, record: dict[str, Any]) -> None:
        self.store.put(INFO_KEY, json.dumps(record, indent=1).encode())

    def ensure_initialised(self) -> dict[str, Any]:
        record = self.info_record()
        if record is None:
            self.initialise()
            record = self.info_record()
            assert record is not None
        return record

    def check_system_identifier(self, system_identifier: str) -> None:
        """Refuse a server that is not the cluster this repository belongs to."""
        record = self.ensure_initialised()
        known = record.get("system_identifier")
        if known is None:
            self._put_info(record | {"system_identifier": system_identifier})
        elif known != system_identifier:
            raise ConfigError(
                f"The repository {self.name} ({self.url}) holds backups of database system "
                f"{known}, but this server is database system {system_identifier}; use "
                "another repository for it."
            )

    # ----- backups (and dumps: ``area`` is ``backups/`` or ``dumps/``) ------------------------
    def backup_dirs(self, area: str = BACKUPS) -> dict[str, set[str]]:
        """Every backup id with stored objects, and the names of those objects."""
        found: dict[str, set[str]] = {}
        for info in self.store.list(area):
            parts = info.key.split("/")
            if len(parts) >= 3:
                found.setdefault(parts[1], set()).add("/".join(parts[2:]))
        return found

    def manifest_key(self, backup_id: str, area: str = BACKUPS) -> str:
        return f"{area}{backup_id}/manifest.json"

    def read_manifest(
        self, backup_id: str, authenticate: bool = True, area: str = BACKUPS
    ) -> Manifest:
        noun, listing = NOUNS[area]
        where = f"of {noun} {backup_id} in {self.name}"
        try:
            raw = self.store.get(self.manifest_key(backup_id, area))
        except ObjectNotFound:
            raise ConfigError(
                f"There is no complete {noun} {backup_id} in the repository {self.name} "
                f"({self.url}); see `{listing}`."
            ) from None
        manifest = Manifest.from_json(raw, where)
        if manifest.id != backup_id or manifest.area != area:
            raise RuntimeFailure(f"The manifest {where} names another {noun} ({manifest.id}).")
        if authenticate:
            manifest.authenticate(self.master_key, where)
        return manifest

    def scan_backups(self, area: str = BACKUPS) -> tuple[list[Manifest], list[DamagedManifest]]:
        """Complete backups whose manifest authenticates (oldest first), and the damaged ones.

        A manifest that does not parse, fails authentication, names another backup or another
        database system than the repository's is damaged: listed apart, never "latest".
        """
        good: list[Manifest] = []
        damaged: list[DamagedManifest] = []
        for checked in self._checked(self.complete_ids(area), area):
            if isinstance(checked, DamagedManifest):
                damaged.append(checked)
            else:
                good.append(checked)
        return good, damaged

    def complete_ids(self, area: str = BACKUPS) -> list[str]:
        """The ids of the backups (or dumps) that have a manifest, oldest first, unread."""
        return [
            bid for bid, names in sorted(self.backup_dirs(area).items()) if "manifest.json" in names
        ]

    def _checked(self, ids: Sequence[str], area: str) -> Iterator[Manifest | DamagedManifest]:
        """Each of ``ids``' manifests, read and authenticated, or why it is damaged."""
        if not ids:
            return
        _ = self.master_key  # no key at all is the user's problem, not damage
        record = self.info_record() if self.store.exists(INFO_KEY) else None
        system = record.get("system_identifier") if record else None
        for backup_id in ids:
            try:
                manifest = self.read_manifest(backup_id, area=area)
            except PgdrError as exc:  # unparseable, forged, replayed, another key
                yield DamagedManifest(backup_id, exc.message, isinstance(exc, ConfigError))
                continue
            yield _foreign(manifest, system) or manifest

    def list_backups(self, area: str = BACKUPS) -> list[Manifest]:
        """Complete backups (or dumps) whose manifest authenticates, oldest first."""
        return self.scan_backups(area)[0]

    def incomplete_backups(self, area: str = BACKUPS) -> list[str]:
        return sorted(
            bid for bid, names in self.backup_dirs(area).items() if "manifest.json" not in names
        )

    def resolve_id(
        self, backup_id: str, area: str = BACKUPS, kinds: Collection[str] | None = None
    ) -> str:
        """Accept ``latest`` (the newest of ``kinds``, if given) or a unique prefix of an id.
        Reads (and authenticates) only the manifests that can be the answer: newest first for
        ``latest``, until one is sound; those of the ids with the prefix otherwise (all of a
        repository's manifests took 30 ms each, twice per restore)."""
        noun, listing = NOUNS[area]
        ids = self.complete_ids(area)
        latest = backup_id == "latest"
        candidates = ids[::-1] if latest else [bid for bid in ids if bid.startswith(backup_id)]
        matches: list[str] = []
        damaged: list[DamagedManifest] = []
        for checked in self._checked(candidates, area):
            if isinstance(checked, DamagedManifest):
                if checked.backup_id == backup_id:
                    raise checked.error()
                damaged.append(checked)
                continue
            if latest and kinds is not None and checked.kind not in kinds:
                continue
            matches.append(checked.id)
            if latest:
                break
        if latest and not matches and damaged:
            raise damaged[-1].error()  # the oldest, as the listing shows them
        if not ids:
            raise ConfigError(f"The repository {self.name} ({self.url}) holds no {noun}s yet.")
        if latest and not matches and kinds is not None:
            raise ConfigError(
                f"The repository {self.name} ({self.url}) holds no {noun} of kind "
                f"{' or '.join(kinds)} yet; see `{listing}`."
            )
        if len(matches) == 1:
            return matches[0]
        if not matches:
            raise ConfigError(
                f"There is no complete {noun} {backup_id} in the repository {self.name}; "
                f"see `{listing}`."
            )
        raise ConfigError(f"{backup_id!r} matches several {noun}s: {', '.join(matches)}.")

    def delete_backup(self, backup_id: str, area: str = BACKUPS) -> int:
        """Remove a backup: its manifest first (so it stops existing), then its chunks."""
        self.store.delete(self.manifest_key(backup_id, area))
        removed = self.store.delete_prefix(f"{area}{backup_id}/")
        self.store.delete_prefix(f"{RESTORE_TESTS}{backup_id}/")
        return removed + 1

    def clean_incomplete(self, keep: str | None = None, area: str = BACKUPS) -> list[str]:
        """Remove leftovers of interrupted backups (call only while holding the lock)."""
        removed = []
        for backup_id in self.incomplete_backups(area):
            if backup_id != keep:
                self.store.delete_prefix(f"{area}{backup_id}/")
                removed.append(backup_id)
        # Not the temporaries of writers without the lock (the WAL streamer, wal push).
        self.store.clean_temporary(older_than_s=LOCK_STALE_AFTER_S)
        return removed

    # ----- records --------------------------------------------------------------------------
    def record_restore_test(self, backup_id: str, result: Mapping[str, Any]) -> str:
        key = f"{RESTORE_TESTS}{backup_id}/{result['at'].replace(':', '')}.json"
        self.store.put(key, json.dumps(dict(result), indent=1, sort_keys=True).encode())
        return key

    def record_backup_failure(self, backup_id: str, error: str) -> None:
        """Note a failed backup (for the monitor's ``backup_failed`` check); best effort."""
        record = {"backup_id": backup_id, "at": time.time(), "error": error}
        with contextlib.suppress(PgdrError):
            self.store.put(f"{BACKUP_FAILURES}{backup_id}.json", json.dumps(record).encode())

    def backup_failures(self) -> list[dict[str, Any]]:
        """Recorded backup failures, oldest first."""
        return sorted(_records(self.store, BACKUP_FAILURES), key=lambda r: float(r.get("at", 0)))

    def restore_tests(self, backup_id: str) -> list[dict[str, Any]]:
        return _records(self.store, f"{RESTORE_TESTS}{backup_id}/")

    # ----- lock -----------------------------------------------------------------------------
    def read_lock(self) -> LockInfo | None:
        try:
            return _parse_lock(self.store.get(LOCK_KEY))
        except ObjectNotFound:
            return None

    @contextmanager
    def locked(self, operation: str) -> Iterator[HeldRepositoryLock]:
        """Hold the repository's writer lock for ``operation`` (atomic; see the module doc).

        On S3 a lock whose process is gone (same host) or that was not refreshed for 15
        minutes (another host) is stale and taken over, by one process only.
        """
        now = time.time()
        mine = LockInfo(os.getpid(), socket.gethostname(), operation, now, now)
        try:
            with self.store.hold_lock(LOCK_KEY, _lock_body(mine), _stale_lock) as held:
                lock = HeldRepositoryLock(mine, held)
                with Background(self._keep_fresh(lock), "pgdr-lock", until_block_ends=True):
                    yield lock
        except LockBusy as exc:
            raise _busy(self.name, exc) from None
        except LockLost:
            raise RuntimeFailure(
                f"The lock of repository {self.name} was taken over by another process while "
                f"{operation} ran (it could not be refreshed for {LOCK_STALE_AFTER_S // 60} "
                "minutes): another writer may have worked meanwhile; check it with "
                "`pgdr backup verify --all` before trusting what this one wrote."
            ) from None

    def refresh_lock(self, lock: HeldRepositoryLock) -> None:
        with lock.guard:
            lock.info.refreshed_at = time.time()
            lock.held.refresh(_lock_body(lock.info))

    def _keep_fresh(self, lock: HeldRepositoryLock) -> Callable[[Stopped], None]:
        """The work that refreshes ``lock`` every ``LOCK_REFRESH_S`` while it is held
        (:class:`Background` stops it, and waits for it, before the lock is let go). A failed
        refresh is logged and tried again; a lock taken over ends it, and the operation fails."""

        def beat(stopped: Stopped) -> None:
            while not stopped(LOCK_REFRESH_S):
                try:
                    self.refresh_lock(lock)
                except LockLost:
                    raise
                except Exception as exc:
                    log.warning("Could not refresh the lock of repository %s: %s", self.name, exc)

        return beat


@dataclass
class HeldRepositoryLock:
    """The lock a writer holds: its description and the store lock behind it."""

    info: LockInfo
    held: HeldLock
    guard: threading.Lock = field(default_factory=threading.Lock)  # one refresh at a time


def _foreign(manifest: Manifest, system: str | None) -> DamagedManifest | None:
    """A manifest of another database system than the repository's ``system`` is damage."""
    if system is None or manifest.system_identifier == system:
        return None
    return DamagedManifest(
        manifest.id,
        f"its manifest is of database system {manifest.system_identifier}, "
        f"not of this repository's ({system}): copied from elsewhere",
    )


def _records(store: ObjectStore, prefix: str) -> list[dict[str, Any]]:
    """The JSON records under ``prefix``; a damaged or vanished one is skipped."""
    out = []
    for info in store.list(prefix):
        with contextlib.suppress(ValueError, ObjectNotFound):
            out.append(json.loads(store.get(info.key)))
    return out


def _busy(name: str, exc: LockBusy) -> RuntimeFailure:
    current = _parse_lock(exc.holder) if exc.holder else None
    if current is None:
        return RuntimeFailure(f"The repository {name} is busy: another process holds its lock.")
    return RuntimeFailure(
        f"The repository {name} is busy: {current.operation} by process "
        f"{current.pid} on {current.host} since "
        f"{time.strftime('%H:%M:%S', time.gmtime(current.started_at))} UTC."
    )


def _lock_body(info: LockInfo) -> bytes:
    return json.dumps(info.__dict__).encode()


def _parse_lock(raw: bytes) -> LockInfo | None:
    try:
        return LockInfo(**json.loads(raw))
    except (ValueError, TypeError):
        return None  # a torn or foreign lock description


def _stale_lock(raw: bytes) -> bool:
    info = _parse_lock(raw)
    return info is None or info.stale()


def open_repository(
    settings: PgdrSettings, name: str | None = None, *, check_writable: bool = False
) -> Repository:
    """Open a configured repository by name (default ``primary``)."""
    config = repo_config(settings, name)
    store = open_store(config.url, config.options)
    repo = Repository(config, store, settings)
    if check_writable:
        store.check_writable()
    return repo


def repository_at(url: str, settings: PgdrSettings, name: str = "adhoc") -> Repository:
    """A repository by URL, with default retention (for tests and scripts)."""
    config = RepoConfig(name, url)
    return Repository(config, open_store(url), settings)
