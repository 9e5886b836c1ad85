"""A repository in an S3-compatible bucket (AWS S3, SeaweedFS, MinIO, ...) via boto3.

Endpoint, region and credentials come from the environment (``AWS_*``, ``PGDR_S3_ENDPOINT``)
or the repository's table in ``pgdr.toml``; never from the command line. A PUT is atomic in S3,
so no temporary objects are needed. Conditional writes (``If-None-Match: *`` to create,
``If-Match`` to replace or delete) serve the repository lock; ``conditional_writes`` finds out
whether the server honours them (SeaweedFS 4 and AWS S3 do). Transient errors are retried by
botocore (standard mode) before a clear error is raised.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from pgdr.core.errors import ConfigError, PgdrError, RuntimeFailure
from pgdr.storage.base import HeldLock, ObjectInfo, ObjectNotFound, ObjectStore, check_key
from pgdr.storage.lock import hold_with_conditional_writes

Codes = tuple[str, ...]
MISSING: Codes = ("NoSuchKey", "404")
PRECONDITION_FAILED: Codes = ("PreconditionFailed", "412", "ConditionalRequestConflict", "409")


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


class S3Store(ObjectStore):
    remote = True

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        max_attempts: int = 5,
        connect_timeout: float = 5,
        read_timeout: float = 60,
    ) -> None:
        self.bucket = bucket
        self._conditional: bool | None = None
        self.max_attempts = max_attempts
        self.prefix = prefix.strip("/")
        self.url = f"s3://{bucket}/{self.prefix}" if self.prefix else f"s3://{bucket}"
        config = Config(
            retries={"max_attempts": max_attempts, "mode": "standard"},
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            s3={"addressing_style": "path"},
        )
        self.client: Any = boto3.client(
            "s3",
            endpoint_url=endpoint_url,
            region_name=region or "us-east-1",
            aws_access_key_id=access_key_id,
            aws_secret_access_key=secret_access_key,
            config=config,
        )

    def _key(self, key: str) -> str:
        check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _fail(self, exc: Exception, action: str, key: str) -> PgdrError:
        if isinstance(exc, ClientError):
            code = _code(exc)
            if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "403"):
                return ConfigError(
                    f"The S3 repository {self.url} refused the credentials ({code}) "
                    f"while {action} {key}."
                )
            if code in ("NoSuchBucket",):
                return RuntimeFailure(f"The S3 bucket {self.bucket!r} does not exist.")
            return RuntimeFailure(
                f"S3 error {code or exc} while {action} {key} in {self.url}, "
                f"after {self.max_attempts} attempts."
            )
        return RuntimeFailure(
            f"The S3 repository {self.url} is unreachable while {action} {key}, "
            f"after {self.max_attempts} attempts ({exc})."
        )

    def _request(
        self, action: str, key: str, method: str, benign: Codes = (), **params: Any
    ) -> Any:
        """The response of the client's ``method`` on ``key``, or None when S3 answers with one
        of the ``benign`` error codes; any other error is one pgdr sentence (:meth:`_fail`)."""
        try:
            return getattr(self.client, method)(Bucket=self.bucket, Key=self._key(key), **params)
        except ClientError as exc:
            if _code(exc) in benign:
                return None
            raise self._fail(exc, action, key) from exc
        except BotoCoreError as exc:
            raise self._fail(exc, action, key) from exc

    def put(self, key: str, data: bytes) -> None:
        self._request("writing", key, "put_object", Body=data)

    def get(self, key: str) -> bytes:
        return self.get_tagged(key)[0]

    def exists(self, key: str) -> bool:
        return self._request("checking", key, "head_object", (*MISSING, "NotFound")) is not None

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        full_prefix = self._key(prefix.rstrip("/")) if prefix else self.prefix
        if (prefix.endswith("/") and full_prefix) or (full_prefix and not prefix):
            full_prefix += "/"
        strip = len(self.prefix) + 1 if self.prefix else 0
        try:
            paginator = self.client.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=self.bucket, Prefix=full_prefix):
                for item in page.get("Contents", []):
                    yield ObjectInfo(item["Key"][strip:], int(item["Size"]))
        except (ClientError, BotoCoreError) as exc:
            raise self._fail(exc, "listing", prefix or "/") from exc

    def delete(self, key: str) -> None:
        self._request("deleting", key, "delete_object")

    # ----- conditional writes (the repository lock) --------------------------------------------
    def create(self, key: str, data: bytes) -> str | None:
        """Write ``key`` only if it does not exist (``If-None-Match: *``): its ETag, or None."""
        response = self._request(
            "creating", key, "put_object", PRECONDITION_FAILED, Body=data, IfNoneMatch="*"
        )
        return None if response is None else str(response.get("ETag", ""))

    def replace_if(self, key: str, data: bytes, etag: str) -> str | None:
        """Overwrite ``key`` only while it is still the object ``etag``: new ETag, or None."""
        response = self._request(
            "replacing",
            key,
            "put_object",
            (*PRECONDITION_FAILED, *MISSING),
            Body=data,
            IfMatch=etag,
        )
        return None if response is None else str(response.get("ETag", ""))

    def get_tagged(self, key: str) -> tuple[bytes, str]:
        """The object and its ETag; :class:`ObjectNotFound` when missing."""
        response = self._request("reading", key, "get_object", MISSING)
        if response is None:
            raise ObjectNotFound(f"{key} is missing from the repository {self.url}.")
        try:
            return response["Body"].read(), str(response.get("ETag", ""))
        except BotoCoreError as exc:
            raise self._fail(exc, "reading", key) from exc

    def delete_if(self, key: str, etag: str) -> bool:
        """Remove ``key`` only while it is the object ``etag``; False when it is not."""
        benign = (*PRECONDITION_FAILED, *MISSING)
        return self._request("deleting", key, "delete_object", benign, IfMatch=etag) is not None

    def conditional_writes(self) -> bool:
        """Whether this store honours ``If-None-Match: *`` (found out once, by trying)."""
        if self._conditional is None:
            probe = f".pgdr-conditional-probe-{uuid.uuid4().hex}"
            first = self.create(probe, b"1")
            second = self.create(probe, b"2")
            self.delete(probe)
            self._conditional = first is not None and second is None
        return self._conditional

    def hold_lock(
        self, key: str, data: bytes, is_stale: Callable[[bytes], bool]
    ) -> AbstractContextManager[HeldLock]:
        return hold_with_conditional_writes(self, key, data, is_stale)

    def prepare(self) -> None:
        """Create the bucket if it does not exist (for ``pgdr repo init``)."""
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except ClientError:
            try:
                self.client.create_bucket(Bucket=self.bucket)
            except (ClientError, BotoCoreError) as exc:
                raise self._fail(exc, "creating bucket", self.bucket) from exc
        except BotoCoreError as exc:
            raise self._fail(exc, "checking bucket", self.bucket) from exc
