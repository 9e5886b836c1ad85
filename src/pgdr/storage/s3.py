"""A repository in an S3-compatible bucket (AWS S3, SeaweedFS, MinIO, ...) via boto3.

Endpoint, region and credentials come from the environment (``AWS_*``, ``PGDR_S3_ENDPOINT``)
or the repository's table in ``pgdr.toml``; never from the command line. A PUT is atomic in S3,
so no temporary objects are needed. Transient errors are retried by botocore (standard mode)
before a clear error is raised.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from pgdr.core.errors import ConfigError, PgdrError, RuntimeFailure
from pgdr.storage.base import ObjectInfo, ObjectNotFound, ObjectStore, check_key


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
            code = exc.response.get("Error", {}).get("Code", "")
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

    def put(self, key: str, data: bytes) -> None:
        try:
            self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data)
        except (ClientError, BotoCoreError) as exc:
            raise self._fail(exc, "writing", key) from exc

    def get(self, key: str) -> bytes:
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=self._key(key))
            body: bytes = response["Body"].read()
            return body
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                raise ObjectNotFound(f"{key} is missing from the repository {self.url}.") from None
            raise self._fail(exc, "reading", key) from exc
        except BotoCoreError as exc:
            raise self._fail(exc, "reading", key) from exc

    def exists(self, key: str) -> bool:
        try:
            self.client.head_object(Bucket=self.bucket, Key=self._key(key))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404", "NotFound"):
                return False
            raise self._fail(exc, "checking", key) from exc
        except BotoCoreError as exc:
            raise self._fail(exc, "checking", key) from exc
        return True

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
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self._key(key))
        except (ClientError, BotoCoreError) as exc:
            raise self._fail(exc, "deleting", key) from exc

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
