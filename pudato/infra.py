"""Create Pudato's AWS resources, idempotently: the same names and settings as ``infra/``.

Per handler: a queue ``pudato-<handler>`` with its visibility timeout and a redrive
policy to ``pudato-<handler>-dlq``. The topics ``pudato-results`` and
``pudato-events``, each with an audit queue subscribed (raw delivery, with the
queue policy AWS requires). The storage bucket: private, versioned, encrypted, with a
lifecycle that keeps old object versions ``storage.version_retention_days`` (reruns read
inputs by version id) and aborts stale multipart uploads. With the ``ducklake``
warehouse, the lake's catalog database (created if missing) and its first snapshot.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from pudato import aws
from pudato.protocol import HANDLERS
from pudato.settings import Settings

DLQ_RETENTION_S = 1_209_600  # 14 days, the SQS maximum: time to look at a poison message
MULTIPART_ABORT_DAYS = 7


@dataclass(frozen=True)
class QueueSpec:
    name: str
    visibility_timeout_s: int
    dead_letter_queue: str | None = None
    max_receive_count: int | None = None


@dataclass(frozen=True)
class SubscriptionSpec:
    topic: str
    queue: str


def declared_queues(settings: Settings) -> list[QueueSpec]:
    specs = []
    for handler in HANDLERS:
        queue = settings.broker.queues[handler]
        dlq = settings.dead_letter_queue_name(handler)
        specs.append(QueueSpec(dlq, queue.visibility_timeout_s))
        specs.append(
            QueueSpec(settings.queue_name(handler), queue.visibility_timeout_s, dlq, queue.max_receive_count)
        )
    for topic in declared_topics(settings):
        specs.append(QueueSpec(f"{topic}-audit", 30))
    return specs


def declared_topics(settings: Settings) -> list[str]:
    return [settings.fanout.results_topic, settings.fanout.events_topic]


def declared_subscriptions(settings: Settings) -> list[SubscriptionSpec]:
    return [SubscriptionSpec(topic, f"{topic}-audit") for topic in declared_topics(settings)]


def up(settings: Settings) -> dict[str, Any]:
    """Create or update every resource. Safe to run again and again."""
    sqs = aws.client("sqs", settings.aws)
    sns = aws.client("sns", settings.aws)
    s3 = aws.client("s3", settings.aws)
    queue_urls: dict[str, str] = {}
    queue_arns: dict[str, str] = {}
    # Dead-letter queues first: a queue's redrive policy names its DLQ's ARN.
    for spec in sorted(declared_queues(settings), key=lambda q: q.dead_letter_queue is not None):
        attributes = {"VisibilityTimeout": str(spec.visibility_timeout_s)}
        if spec.dead_letter_queue:
            attributes["RedrivePolicy"] = json.dumps(
                {"deadLetterTargetArn": queue_arns[spec.dead_letter_queue], "maxReceiveCount": spec.max_receive_count}
            )
        else:
            attributes["MessageRetentionPeriod"] = str(DLQ_RETENTION_S)
        url = _ensure_queue(sqs, spec.name, attributes)
        queue_urls[spec.name] = url
        queue_arns[spec.name] = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
            "QueueArn"
        ]
    topic_arns = {topic: sns.create_topic(Name=topic)["TopicArn"] for topic in declared_topics(settings)}
    for sub in declared_subscriptions(settings):
        _allow_topic(sqs, queue_urls[sub.queue], queue_arns[sub.queue], topic_arns[sub.topic])
        sns.subscribe(
            TopicArn=topic_arns[sub.topic],
            Protocol="sqs",
            Endpoint=queue_arns[sub.queue],
            Attributes={"RawMessageDelivery": "true"},
            ReturnSubscriptionArn=True,
        )
    _ensure_bucket(s3, settings.storage.bucket, settings.aws.region)
    s3.put_bucket_lifecycle_configuration(
        Bucket=settings.storage.bucket, LifecycleConfiguration={"Rules": lifecycle_rules(settings)}
    )
    created: dict[str, Any] = {"queues": queue_urls, "topics": topic_arns, "bucket": settings.storage.bucket}
    if settings.warehouse.backend == "ducklake":
        from pudato.backends.warehouse.ducklake import (
            ensure_catalog,  # lazy: loads DuckDB
        )

        created["lake"] = ensure_catalog(settings)
    return created


def lifecycle_rules(settings: Settings) -> list[dict[str, Any]]:
    """The bucket's lifecycle, as ``infra/bucket.tf`` declares it.

    Current objects never expire. An overwritten or deleted object's old version is
    kept ``version_retention_days``: that is how far back an exact rerun can read
    its S3 inputs. Lake data files are never overwritten; DuckLake deletes them only
    after their snapshots are expired, so the same window covers them.
    """
    return [
        {
            "ID": "keep-versions-for-reruns",
            "Status": "Enabled",
            "Filter": {"Prefix": ""},
            "NoncurrentVersionExpiration": {"NoncurrentDays": settings.storage.version_retention_days},
            "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": MULTIPART_ABORT_DAYS},
        }
    ]


def _ensure_queue(sqs: Any, name: str, attributes: dict[str, str]) -> str:
    from botocore.exceptions import ClientError

    try:
        created: str = sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
        return created
    except ClientError as exc:
        if exc.response["Error"]["Code"] not in ("QueueAlreadyExists", "QueueNameExists"):
            raise
    url: str = sqs.get_queue_url(QueueName=name)["QueueUrl"]
    sqs.set_queue_attributes(QueueUrl=url, Attributes=attributes)
    return url


def _allow_topic(sqs: Any, queue_url: str, queue_arn: str, topic_arn: str) -> None:
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "topic-delivery",
                "Effect": "Allow",
                "Principal": {"Service": "sns.amazonaws.com"},
                "Action": "sqs:SendMessage",
                "Resource": queue_arn,
                "Condition": {"ArnEquals": {"aws:SourceArn": topic_arn}},
            }
        ],
    }
    sqs.set_queue_attributes(QueueUrl=queue_url, Attributes={"Policy": json.dumps(policy)})


def _ensure_bucket(s3: Any, bucket: str, region: str) -> None:
    from botocore.exceptions import ClientError

    try:
        if region == "us-east-1":
            s3.create_bucket(Bucket=bucket)
        else:
            s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": region})
    except ClientError as exc:
        if exc.response["Error"]["Code"] != "BucketAlreadyOwnedByYou":
            raise  # BucketAlreadyExists: somebody else owns that name
    # As infra/bucket.tf declares: private, versioned, encrypted at rest.
    s3.put_public_access_block(
        Bucket=bucket,
        PublicAccessBlockConfiguration={
            "BlockPublicAcls": True, "IgnorePublicAcls": True, "BlockPublicPolicy": True, "RestrictPublicBuckets": True,
        },
    )
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    s3.put_bucket_encryption(
        Bucket=bucket,
        ServerSideEncryptionConfiguration={
            "Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]
        },
    )
