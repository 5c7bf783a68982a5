"""S3 storage through boto3. The sha256 of each object is kept in its metadata."""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pudato import aws, datasets
from pudato.backends.storage import ObjectInfo, StorageBackend, check_key, check_prefix, sha256_of_file
from pudato.errors import BackendUnavailable, NotFound, TerminalError, VersionGone
from pudato.protocol import DataReference
from pudato.settings import Settings

_MISSING = {"404", "NoSuchKey", "NotFound", "NoSuchBucket"}
# What S3 answers for a version that was deleted, expired, or is now a delete marker.
_VERSION_GONE = _MISSING | {"NoSuchVersion", "InvalidArgument", "400", "405", "MethodNotAllowed"}


class S3Storage(StorageBackend):
    kind = "s3"
    keeps_versions = True  # the platform bucket is versioned (pudato infra up, infra/)

    def __init__(self, bucket: str, client: Any) -> None:
        self.bucket = bucket
        self.client = client

    @classmethod
    def from_settings(cls, settings: Settings) -> S3Storage:
        return cls(settings.storage.bucket, aws.client("s3", settings.aws))

    def reference(self, key: str, info: ObjectInfo | None = None) -> DataReference:
        return datasets.s3_object(self.bucket, key, **(info.facets() if info else {}))

    def put_file(self, key: str, source: Path, content_type: str | None = None) -> ObjectInfo:
        check_key(key)
        digest = sha256_of_file(source)
        extra: dict[str, Any] = {"Metadata": {"sha256": digest}}
        if content_type:
            extra["ContentType"] = content_type
        with self._errors(key):
            self.client.upload_file(str(source), self.bucket, key, ExtraArgs=extra)
        return self.head(key)

    def put_bytes(self, key: str, data: bytes, content_type: str | None = None) -> ObjectInfo:
        check_key(key)
        extra: dict[str, Any] = {}
        if content_type:
            extra["ContentType"] = content_type
        with self._errors(key):
            self.client.put_object(
                Bucket=self.bucket,
                Key=key,
                Body=data,
                Metadata={"sha256": hashlib.sha256(data).hexdigest()},
                **extra,
            )
        return self.head(key)

    def get_bytes(self, key: str, version: str | None = None) -> bytes:
        check_key(key)
        with self._errors(key, version):
            body: bytes = self.client.get_object(Bucket=self.bucket, Key=key, **_version(version))["Body"].read()
            return body

    def head(self, key: str, version: str | None = None) -> ObjectInfo:
        check_key(key)
        with self._errors(key, version):
            response = self.client.head_object(Bucket=self.bucket, Key=key, **_version(version))
        return ObjectInfo(
            key=key,
            size=response["ContentLength"],
            etag=response.get("ETag", "").strip('"') or None,
            version=response.get("VersionId"),
            sha256=response.get("Metadata", {}).get("sha256"),
            content_type=response.get("ContentType"),
            last_modified=response["LastModified"].isoformat() if "LastModified" in response else None,
        )

    def list(self, prefix: str = "", limit: int = 1000) -> list[ObjectInfo]:
        check_prefix(prefix)
        found: list[ObjectInfo] = []
        paginator = self.client.get_paginator("list_objects_v2")
        with self._errors(prefix):
            for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
                for item in page.get("Contents", []):
                    found.append(
                        ObjectInfo(
                            key=item["Key"],
                            size=item["Size"],
                            etag=item.get("ETag", "").strip('"') or None,
                            last_modified=item["LastModified"].isoformat(),
                        )
                    )
                    if len(found) >= limit:
                        return found
        return found

    def delete(self, key: str) -> None:
        self.head(key)  # a missing key is an error, as it is for the local backend
        with self._errors(key):
            self.client.delete_object(Bucket=self.bucket, Key=key)

    def copy(self, source_key: str, target_key: str, version: str | None = None) -> ObjectInfo:
        source = self.head(source_key, version)
        check_key(target_key)
        with self._errors(source_key, version):
            self.client.copy_object(
                Bucket=self.bucket,
                Key=target_key,
                CopySource={"Bucket": self.bucket, "Key": source_key, **_version(version)},
                Metadata={"sha256": source.sha256} if source.sha256 else {},
                MetadataDirective="REPLACE",
            )
        return self.head(target_key)

    def direct_url(self, key: str) -> str | None:
        return f"s3://{self.bucket}/{check_key(key)}"

    @contextmanager
    def local_path(self, key: str, version: str | None = None) -> Iterator[Path]:
        check_key(key)
        suffix = "".join(Path(key).suffixes[-2:])
        with tempfile.TemporaryDirectory(prefix="pudato-s3-") as folder:
            target = Path(folder) / f"object{suffix}"
            with self._errors(key, version):
                self.client.download_file(self.bucket, key, str(target), ExtraArgs=_version(version) or None)
            yield target

    @contextmanager
    def _errors(self, key: str, version: str | None = None) -> Iterator[None]:
        from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError

        try:
            yield
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if version is not None and code in _VERSION_GONE:
                raise VersionGone(
                    f"s3://{self.bucket}/{key} version {version} is gone (deleted, expired, or a delete "
                    f"marker; S3 said {code}): it cannot be read as recorded. Rerun with --latest-data to read "
                    "the object as it is now",
                    dataset=f"s3://{self.bucket}/{key}", version=version,
                ) from None
            if code in _MISSING:
                raise NotFound(
                    f"object s3://{self.bucket}/{key} does not exist", bucket=self.bucket, key=key
                ) from None
            if code.startswith("5") or code in {"SlowDown", "RequestTimeout"}:
                raise BackendUnavailable(f"S3 is unavailable: {code}", key=key) from None
            raise TerminalError(f"S3 refused the request for {key!r}: {code}", key=key) from None
        except EndpointConnectionError as exc:
            raise BackendUnavailable(f"cannot reach S3: {exc}", key=key) from None
        except BotoCoreError as exc:
            raise BackendUnavailable(f"S3 request failed: {exc}", key=key) from None


def _version(version: str | None) -> dict[str, str]:
    return {"VersionId": version} if version is not None else {}
