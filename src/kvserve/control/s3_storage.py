"""A registry in any S3-compatible bucket, through boto3.

Credentials come from boto3's usual chain (environment, ~/.aws, instance roles); the
bucket, key prefix and endpoint from RegistryConfig. Exclusive writes use
`If-None-Match: *`, which S3 (since 2024), MinIO and moto honour: of two racing
creators of one key, the second gets 412 Precondition Failed.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import BinaryIO

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from kvserve.control.checksum import CHUNK_BYTES, Progress
from kvserve.control.registry_config import RegistryConfig
from kvserve.control.errors import StorageError

_ABSENT = {"404", "NoSuchKey", "NotFound"}
_LOST_RACE = {"412", "PreconditionFailed", "409", "ConditionalRequestConflict"}
# Multipart above 16 MiB, in 16 MiB parts: a stream without seek() is read in order and
# buffered part by part (up to 10 parts in memory, 160 MiB); 10,000 parts allow 160 GiB.
_TRANSFER = TransferConfig(multipart_threshold=16 << 20, multipart_chunksize=16 << 20)


class S3Storage:
    """Objects under `prefix/` in `bucket`."""

    def __init__(self, client, bucket: str, prefix: str) -> None:
        self.client, self.bucket, self.prefix = client, bucket, prefix

    @classmethod
    def from_config(cls, config: RegistryConfig) -> S3Storage:
        bucket, prefix = config.s3_location()
        client = boto3.client(
            "s3", endpoint_url=config.s3_endpoint_url, region_name=config.s3_region,
            config=Config(retries={"max_attempts": 5, "mode": "standard"}),
        )
        return cls(client, bucket, prefix)

    def describe(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"

    def read(self, key: str) -> bytes | None:
        body = self._unless_absent("read", key, self.client.get_object)
        return None if body is None else body["Body"].read()

    def write(self, key: str, data: bytes, exclusive: bool = False) -> bool:
        extra = {"IfNoneMatch": "*"} if exclusive else {}
        try:
            self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data, **extra)
        except ClientError as exc:
            if exclusive and _code(exc) in _LOST_RACE:
                return False
            raise self._error("write", key, exc) from None
        except BotoCoreError as exc:
            raise self._error("write", key, exc) from None
        return True

    def upload(self, key: str, stream: BinaryIO, progress: Progress | None = None) -> None:
        try:
            self.client.upload_fileobj(stream, self.bucket, self._key(key), Callback=progress, Config=_TRANSFER)
        except (ClientError, BotoCoreError) as exc:
            raise self._error("upload", key, exc) from None

    def chunks(self, key: str) -> Iterator[bytes]:
        found = self._unless_absent("read", key, self.client.get_object)
        if found is None:
            raise StorageError(f"{key} is missing from {self.describe()}")
        return self._stream(key, found["Body"])

    def _stream(self, key: str, body) -> Iterator[bytes]:
        try:
            yield from body.iter_chunks(CHUNK_BYTES)
        except (BotoCoreError, OSError) as exc:  # the connection broke mid-object
            raise self._error("read", key, exc) from None
        finally:
            body.close()

    def size(self, key: str) -> int | None:
        head = self._unless_absent("stat", key, self.client.head_object)
        return None if head is None else head["ContentLength"]

    def list(self, prefix: str) -> list[str]:
        strip = len(self._key(""))
        keys = []
        try:
            pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=self._key(prefix))
            for page in pages:
                keys += [obj["Key"][strip:] for obj in page.get("Contents", [])]
        except (ClientError, BotoCoreError) as exc:
            raise self._error("list", prefix, exc) from None
        return sorted(keys)

    def delete(self, key: str) -> None:
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self._key(key))
        except (ClientError, BotoCoreError) as exc:
            raise self._error("delete", key, exc) from None

    def _unless_absent(self, action: str, key: str, call) -> dict | None:
        """call(Bucket=, Key=)'s answer, None when the object does not exist; other failures
        become a StorageError naming the action."""
        try:
            return call(Bucket=self.bucket, Key=self._key(key))
        except ClientError as exc:
            if _code(exc) in _ABSENT:
                return None
            raise self._error(action, key, exc) from None
        except BotoCoreError as exc:
            raise self._error(action, key, exc) from None

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def _error(self, action: str, key: str, exc: Exception) -> StorageError:
        return StorageError(f"cannot {action} {key} in {self.describe()}: {exc}")


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))
