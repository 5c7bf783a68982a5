"""moto's state across a restart of `pudato local aws` (as `make stack` restarts it): S3 versions keep their ids.

The registry records the version id of every S3 object a step read or wrote, and an exact
rerun reads it by that id; a restart that gave versions new ids would make every recorded
version VersionGone.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from pudato.devstack import free_port

pytestmark = pytest.mark.integration

BIN = Path(sys.executable).parent


class LocalAws:
    """`pudato local aws` on a free port with its state file, started and stopped cleanly."""

    def __init__(self, root: Path) -> None:
        self.root, self.port, self.state = root, free_port(), root / "moto-state.json"
        self.lines: list[str] = []
        self.process: subprocess.Popen[str] | None = None

    def client(self, service: str) -> Any:
        return boto3.client(service, endpoint_url=f"http://127.0.0.1:{self.port}", region_name="us-east-1",
                            aws_access_key_id="testing", aws_secret_access_key="testing")

    def start(self) -> None:
        self.process = subprocess.Popen(
            [str(BIN / "pudato"), "local", "aws", "--port", str(self.port), "--state", str(self.state)],
            cwd=self.root, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
        )
        assert self.process.stdout is not None
        for line in self.process.stdout:  # moto says "ready" or exits: no deadline needed beyond its own
            self.lines.append(line.rstrip())
            if "moto ready" in line:
                return
        pytest.fail(f"moto exited ({self.process.wait()}):\n" + "\n".join(self.lines))

    def stop(self) -> int:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        out, _ = self.process.communicate(timeout=60)
        self.lines += out.splitlines()
        return self.process.returncode


@pytest.fixture()
def local_aws() -> Iterator[LocalAws]:
    aws = LocalAws(Path(tempfile.mkdtemp(prefix="pudato-moto-")).resolve())
    try:
        yield aws
    finally:
        if aws.process is not None and aws.process.poll() is None:
            aws.process.kill()
            aws.process.wait(timeout=30)
        shutil.rmtree(aws.root, ignore_errors=True)


def _versions(s3: Any, bucket: str) -> tuple[list[tuple[str, str, bool]], list[tuple[str, str]]]:
    listed = s3.list_object_versions(Bucket=bucket)
    versions = [(v["Key"], v["VersionId"], v["IsLatest"]) for v in listed.get("Versions", [])]
    markers = [(m["Key"], m["VersionId"]) for m in listed.get("DeleteMarkers", [])]
    return versions, markers


def test_a_recorded_version_id_reads_the_same_bytes_after_a_restart(local_aws: LocalAws) -> None:
    local_aws.start()
    s3 = local_aws.client("s3")
    s3.create_bucket(Bucket="lake")
    s3.put_bucket_versioning(Bucket="lake", VersioningConfiguration={"Status": "Enabled"})
    recorded = s3.put_object(Bucket="lake", Key="raw/la.csv", Body=b"a,b\n1,2\n")["VersionId"]
    latest = s3.put_object(Bucket="lake", Key="raw/la.csv", Body=b"a,b\n1,2\n3,4\n")["VersionId"]
    s3.put_object(Bucket="lake", Key="gone.txt", Body=b"x")
    marker = s3.delete_object(Bucket="lake", Key="gone.txt")["VersionId"]
    versions_before, markers_before = _versions(s3, "lake")
    modified_before = s3.head_object(Bucket="lake", Key="raw/la.csv", VersionId=recorded)["LastModified"]
    assert local_aws.stop() == 0, "\n".join(local_aws.lines)
    saved = json.loads(local_aws.state.read_text())
    saved_ids = {o["version_id"] for b in saved["s3"] for o in b["objects"]}
    assert {recorded, latest, marker} <= saved_ids

    local_aws.start()
    s3 = local_aws.client("s3")
    restored = s3.get_object(Bucket="lake", Key="raw/la.csv", VersionId=recorded)
    assert restored["Body"].read() == b"a,b\n1,2\n"
    assert restored["VersionId"] == recorded
    assert restored["LastModified"] == modified_before
    assert s3.get_object(Bucket="lake", Key="raw/la.csv")["VersionId"] == latest
    versions_after, markers_after = _versions(s3, "lake")
    assert versions_after == versions_before
    assert markers_after == markers_before
    restored_line = next(line for line in local_aws.lines if "restored moto's state" in line)
    assert "4 version ids kept" in restored_line
    # A second restart keeps them too: the ids saved are the ones served.
    assert local_aws.stop() == 0, "\n".join(local_aws.lines)
    local_aws.start()
    assert local_aws.client("s3").get_object(Bucket="lake", Key="raw/la.csv", VersionId=recorded)["Body"].read() \
        == b"a,b\n1,2\n"
    assert local_aws.stop() == 0, "\n".join(local_aws.lines)


def test_a_snapshot_without_version_ids_still_restores_with_new_ones(local_aws: LocalAws) -> None:
    """State saved before version ids were kept (format 1) is read, its versions given new ids."""
    bucket = {"name": "old", "region": "us-east-1", "versioning": "Enabled", "encryption": None,
              "public_access_block": None, "policy": None, "tags": None,
              "objects": [{"key": "a.txt", "body": "b25l", "headers": {}, "metadata": {}}]}  # fmt: skip
    local_aws.state.write_text(json.dumps({"format": 1, "saved_at": 0, "s3": [bucket], "sqs": [], "sns": []}))
    local_aws.start()
    s3 = local_aws.client("s3")
    restored = s3.get_object(Bucket="old", Key="a.txt")
    assert restored["Body"].read() == b"one"
    assert restored["VersionId"] not in ("", "null")
    restored_line = next(line for line in local_aws.lines if "restored moto's state" in line)
    assert "0 version ids kept" in restored_line
    assert local_aws.stop() == 0, "\n".join(local_aws.lines)
