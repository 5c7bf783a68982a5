"""boto3 clients built from :class:`~pudato.settings.AWSSettings`, in one place."""

from __future__ import annotations

from typing import Any

from pudato.settings import AWSSettings


def client(service: str, aws: AWSSettings) -> Any:
    import boto3  # imported here so that importing Pudato does not load botocore
    from botocore.config import Config

    return boto3.client(
        service,
        endpoint_url=aws.endpoint_url,
        region_name=aws.region,
        aws_access_key_id=aws.access_key_id,
        aws_secret_access_key=(
            aws.secret_access_key.get_secret_value() if aws.secret_access_key else None
        ),
        config=Config(retries={"max_attempts": 3, "mode": "standard"}, s3={"addressing_style": "path"}),
    )
