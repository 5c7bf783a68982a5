"""dbt's builds use the S3 key the settings give them, and a key IAM allows only the lake's prefix is enough.

A moto server of this test's own enforces IAM (``INITIAL_NO_AUTH_ACTION_COUNT``:
the set-up requests are free, every later one is checked). The platform's key may
do anything in S3. ``lake-builder`` has the S3 statements of the transform role in
``infra/roles.tf``: list the lake's prefix, get and put under it, never delete.
``nobody`` has no policy. The sample build, sandboxed, on a DuckLake whose data are in
that bucket, succeeds with lake-builder's key and fails with nobody's, so the
sandbox's DuckDB uses the build's key, not the platform's, and needs no more than
the lake.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from helpers import commit
from pydantic import SecretStr

from pudato import devstack
from pudato.backends.transform.sandboxed import SandboxedRunner
from pudato.backends.warehouse.ducklake import ensure_catalog
from pudato.handlers.transform import TransformHandler
from pudato.protocol import Command, Result
from pudato.settings import Settings

pytestmark = pytest.mark.integration

BUCKET = "pudato-iam"
PROJECT = "name: scoped\nversion: '1.0.0'\nconfig-version: 2\nprofile: scoped\n"
LAKE_ONLY = {
    "Version": "2012-10-17",
    "Statement": [
        {"Effect": "Allow", "Action": ["s3:ListBucket"], "Resource": f"arn:aws:s3:::{BUCKET}",
         "Condition": {"StringLike": {"s3:prefix": ["lake/*"]}}},
        {"Effect": "Allow", "Action": ["s3:AbortMultipartUpload", "s3:GetObject", "s3:PutObject"],
         "Resource": f"arn:aws:s3:::{BUCKET}/lake/*"},
    ],
}  # fmt: skip
EVERYTHING = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}
# create_bucket, 3 x create_user, 2 x put_user_policy, 3 x create_access_key
FREE_REQUESTS = 9


@pytest.fixture(scope="module")
def iam_moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("INITIAL_NO_AUTH_ACTION_COUNT", str(FREE_REQUESTS))
        with devstack.moto_server(log_path=tmp_path_factory.mktemp("moto") / "moto.log") as endpoint:
            patch.delenv("INITIAL_NO_AUTH_ACTION_COUNT")
            setup = {"endpoint_url": endpoint, "region_name": "us-east-1", "aws_access_key_id": "setup",
                     "aws_secret_access_key": "setup"}  # fmt: skip
            boto3.client("s3", **setup).create_bucket(Bucket=BUCKET)
            iam = boto3.client("iam", **setup)
            keys = {}
            for user, policy in (("platform", EVERYTHING), ("lake-builder", LAKE_ONLY), ("nobody", None)):
                iam.create_user(UserName=user)
                if policy is not None:
                    iam.put_user_policy(UserName=user, PolicyName="s3", PolicyDocument=json.dumps(policy))
                key = iam.create_access_key(UserName=user)["AccessKey"]
                keys[user] = (key["AccessKeyId"], key["SecretAccessKey"])
            yield {"endpoint": endpoint, "keys": keys}


def _s3(iam_moto: dict[str, Any], user: str) -> Any:
    key_id, secret = iam_moto["keys"][user]
    return boto3.client("s3", endpoint_url=iam_moto["endpoint"], region_name="us-east-1",
                        aws_access_key_id=key_id, aws_secret_access_key=secret)  # fmt: skip


def _build(iam_moto: dict[str, Any], root: Path, builder: str) -> Result:
    repo = root / "repo"
    model = "{{ config(materialized='table') }}\nselect range as id from range(100000)\n"
    sha = commit(repo, {"dbt_project.yml": PROJECT, "models/scoped_rows.sql": model}, "scoped")
    platform_id, platform_secret = iam_moto["keys"]["platform"]
    build_id, build_secret = iam_moto["keys"][builder]
    settings = Settings(
        _env_file=None,
        aws={"endpoint_url": iam_moto["endpoint"], "access_key_id": platform_id,
             "secret_access_key": SecretStr(platform_secret)},
        registry={"url": f"sqlite:///{root}/registry.db"},
        warehouse={"backend": "ducklake", "catalog_url": f"sqlite:///{root}/lake.sqlite",
                   "data_path": f"s3://{BUCKET}/lake/{builder}/", "extension_dir": root / "ext"},
        logic={"cache_dir": root / "cache"},
        transform={"s3_access_key_id": build_id, "s3_secret_access_key": SecretStr(build_secret)},
    )  # fmt: skip
    ensure_catalog(settings)
    handler = TransformHandler(settings, runner=SandboxedRunner.from_settings(settings))
    command = Command(handler="transform", action="build", job_id=f"job-{builder}", logic_repo=str(repo),
                      logic_version=sha)  # fmt: skip
    try:
        return handler.execute(command)
    finally:
        handler.runner.close()


def test_iam_is_enforced_here(iam_moto: dict[str, Any]) -> None:
    """Without this, the two builds below would prove nothing."""
    with pytest.raises(ClientError, match="AccessDenied"):
        _s3(iam_moto, "lake-builder").put_object(Bucket=BUCKET, Key="raw/outside.csv", Body=b"x")
    with pytest.raises(ClientError, match="AccessDenied"):
        _s3(iam_moto, "nobody").put_object(Bucket=BUCKET, Key="lake/nobody/x", Body=b"x")


def test_a_build_needs_no_more_than_the_lakes_prefix(iam_moto: dict[str, Any], tmp_path: Path) -> None:
    result = _build(iam_moto, tmp_path, "lake-builder")
    assert result.status == "succeeded", result.error
    listed = _s3(iam_moto, "platform").list_objects_v2(Bucket=BUCKET, Prefix="lake/lake-builder/")
    assert [item["Key"] for item in listed.get("Contents", []) if item["Key"].endswith(".parquet")]


def test_a_build_uses_its_own_key_not_the_platforms(iam_moto: dict[str, Any], tmp_path: Path) -> None:
    result = _build(iam_moto, tmp_path, "nobody")
    assert result.status == "failed"
    assert result.error is not None
    assert "403" in result.error.message or "AccessDenied" in result.error.message, result.error.message
