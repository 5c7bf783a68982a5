"""moto's state kept across restarts of ``pudato local aws``.

moto 5.2.5 has no way to save or load its state: its ``/moto-api/`` offers reset,
state-manager transitions and a *recorder* that appends every request to a file and can
replay them. Replaying does not rebuild this stack's state: a replayed ``UploadPart``
names an upload id the new server never issued (so objects DuckDB wrote with multipart
uploads are lost), a replayed ``DeleteMessage`` names a receipt handle that no longer
exists (so every message ever sent is delivered again), and the file grows with every
one of the workers' long polls. So instead, at a clean stop, :func:`snapshot_api` takes
a snapshot of the three services Pudato uses and at the next start :func:`restore` puts
it back through the ordinary AWS API:

* S3: buckets (region, versioning, default encryption, public access block, policy,
  tags) and every object version and delete marker in order, with content, content
  type, encoding and user metadata, and its version id and last-modified time. The
  API gives every re-put version a new id, so :func:`restore`, which runs in the
  server's process, then sets each version's recorded id and time back in moto's
  memory: version ids recorded in the registry still name the same bytes, and exact
  reruns keep working across a restart. A snapshot of format 1 held no ids: its
  versions keep the new ones. Object tags and ACLs are not kept.
* SQS: queues with their attributes (redrive policies included) and tags, and every
  message not yet deleted (visible, delayed or in flight) with its attributes, sent
  again as a new visible message: new message id, receive count back to 0, no delay.
  Queues Celery makes for one process (``celeryev-*``, ``*pidbox*``) and their
  subscriptions are left out.
* SNS: topics with their attributes and tags, and their subscriptions with their
  attributes (new subscription ARNs).

Nothing else moto emulates is kept.
"""

from __future__ import annotations

import base64
import datetime
import functools
import re
import time
from collections.abc import Callable
from typing import Any

STATE_FORMAT = 2
_READABLE_FORMATS = (1, 2)  # format 1 held no version ids: those versions get new ones
MOTO_ACCESS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}

# Object metadata moto keeps that maps back to a PutObject parameter.
_OBJECT_HEADERS = {
    "content-type": "ContentType",
    "content-encoding": "ContentEncoding",
    "content-disposition": "ContentDisposition",
    "content-language": "ContentLanguage",
    "cache-control": "CacheControl",
}
# Queue attributes that only describe the queue's present (counts, times, its ARN).
_QUEUE_READ_ONLY = {
    "QueueArn", "ApproximateNumberOfMessages", "ApproximateNumberOfMessagesDelayed",
    "ApproximateNumberOfMessagesNotVisible", "CreatedTimestamp", "LastModifiedTimestamp",
}
# Queues Celery makes for one process (Flower's event receiver, remote-control replies), which AMQP
# would delete with it; SQS keeps them, and kept across restarts they would pile up.
_TRANSIENT_QUEUE = re.compile(r"^celeryev[-_]|pidbox")
_QUEUE_AFTER_ALL = ("RedrivePolicy", "RedriveAllowPolicy")  # name other queues: set once all exist
_TOPIC_SETTABLE = ("DisplayName", "Policy", "DeliveryPolicy", "KmsMasterKeyId", "FifoTopic",
                   "ContentBasedDeduplication", "SignatureVersion", "TracingConfig", "ArchivePolicy")
_SUBSCRIPTION_SETTABLE = ("RawMessageDelivery", "FilterPolicy", "FilterPolicyScope", "RedrivePolicy",
                          "DeliveryPolicy", "SubscriptionRoleArn", "ReplayPolicy")


@functools.cache
def _client(service: str, endpoint: str, region: str = "us-east-1") -> Any:
    import boto3
    from botocore.config import Config

    return boto3.client(service, endpoint_url=endpoint, region_name=region, **MOTO_ACCESS,
                        config=Config(retries={"max_attempts": 2}, s3={"addressing_style": "path"}))


def _regions() -> list[str]:
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.sns.models import sns_backends
    from moto.sqs.models import sqs_backends

    found = set(sqs_backends[DEFAULT_ACCOUNT_ID].keys()) | set(sns_backends[DEFAULT_ACCOUNT_ID].keys())
    return sorted(found) or ["us-east-1"]


def snapshot_api(endpoint: str) -> dict[str, Any]:
    """Read the configuration of buckets, queues, topics and subscriptions through the API."""
    regions = _regions()
    return {"format": STATE_FORMAT, "saved_at": time.time(), "s3": _snapshot_s3(endpoint),
            "sqs": _snapshot_sqs(endpoint, regions), "sns": _snapshot_sns(endpoint, regions)}


def _optional(call: Callable[..., dict[str, Any]], **kwargs: Any) -> dict[str, Any] | None:
    from botocore.exceptions import ClientError

    try:
        response = call(**kwargs)
    except ClientError:
        return None  # e.g. NoSuchBucketPolicy: the setting is absent
    response.pop("ResponseMetadata", None)
    return response


def _snapshot_s3(endpoint: str) -> list[dict[str, Any]]:
    s3 = _client("s3", endpoint)
    buckets = []
    for bucket in s3.list_buckets().get("Buckets", []):
        name = bucket["Name"]
        buckets.append({
            "name": name,
            "region": (_optional(s3.get_bucket_location, Bucket=name) or {}).get("LocationConstraint") or "us-east-1",
            "versioning": (_optional(s3.get_bucket_versioning, Bucket=name) or {}).get("Status"),
            "encryption": (_optional(s3.get_bucket_encryption, Bucket=name) or {}).get(
                "ServerSideEncryptionConfiguration"),
            "public_access_block": (_optional(s3.get_public_access_block, Bucket=name) or {}).get(
                "PublicAccessBlockConfiguration"),
            "policy": (_optional(s3.get_bucket_policy, Bucket=name) or {}).get("Policy"),
            "tags": (_optional(s3.get_bucket_tagging, Bucket=name) or {}).get("TagSet"),
            "objects": [],
        })
    return buckets


def _snapshot_sqs(endpoint: str, regions: list[str]) -> list[dict[str, Any]]:
    queues = []
    for region in regions:
        sqs = _client("sqs", endpoint, region)
        for url in _all(sqs.list_queues, "QueueUrls", MaxResults=1000):
            if _TRANSIENT_QUEUE.search(url.rsplit("/", 1)[-1]):
                continue
            try:  # a queue may go while this runs (Celery deletes its reply queues as it stops)
                attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
                tags = sqs.list_queue_tags(QueueUrl=url).get("Tags") or {}
            except sqs.exceptions.QueueDoesNotExist:
                continue
            queues.append({
                "name": url.rsplit("/", 1)[-1],
                "region": region,
                "attributes": {k: v for k, v in attributes.items() if k not in _QUEUE_READ_ONLY},
                "tags": tags,
                "messages": [],
            })
    return queues


def _snapshot_sns(endpoint: str, regions: list[str]) -> list[dict[str, Any]]:
    topics = []
    for region in regions:
        sns = _client("sns", endpoint, region)
        for topic in _all(sns.list_topics, "Topics"):
            arn = topic["TopicArn"]
            try:
                attributes = sns.get_topic_attributes(TopicArn=arn)["Attributes"]
                tags = sns.list_tags_for_resource(ResourceArn=arn).get("Tags") or []
                listed = _all(sns.list_subscriptions_by_topic, "Subscriptions", TopicArn=arn)
            except sns.exceptions.NotFoundException:
                continue
            subscriptions = []
            for sub in listed:
                if sub["SubscriptionArn"] in ("PendingConfirmation", "Deleted"):
                    continue
                if sub["Protocol"] == "sqs" and _TRANSIENT_QUEUE.search(sub["Endpoint"].rsplit(":", 1)[-1]):
                    continue  # kombu's fan-out to one process's queue, which is not kept either
                try:
                    sub_attributes = sns.get_subscription_attributes(
                        SubscriptionArn=sub["SubscriptionArn"])["Attributes"]
                except sns.exceptions.NotFoundException:
                    continue
                subscriptions.append({
                    "protocol": sub["Protocol"], "endpoint": sub["Endpoint"],
                    "attributes": {k: v for k, v in sub_attributes.items() if k in _SUBSCRIPTION_SETTABLE and v},
                })
            topics.append({
                "name": arn.rsplit(":", 1)[-1],
                "region": region,
                "attributes": {k: v for k, v in attributes.items() if k in _TOPIC_SETTABLE and v},
                "tags": tags,
                "subscriptions": subscriptions,
            })
    return topics


def _all(call: Callable[..., dict[str, Any]], key: str, **kwargs: Any) -> list[Any]:
    """Every item of a paginated list call: dicts, or strings for queue URLs."""
    found: list[Any] = []
    token = None
    while True:
        response = call(**kwargs, **({"NextToken": token} if token else {}))
        found += response.get(key, [])
        token = response.get("NextToken")
        if not token:
            return found


def snapshot_backends(snapshot: dict[str, Any]) -> None:
    """Add object versions and queued messages, read from moto's memory once the server has stopped.

    The API cannot give these: S3 has no call for the order of versions and delete
    markers, and reading a queue's messages would receive them (and count receives).
    """
    _snapshot_s3_objects(snapshot["s3"])
    _snapshot_sqs_messages(snapshot["sqs"])


def _s3_buckets() -> Any:
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.s3.models import s3_backends

    return s3_backends[DEFAULT_ACCOUNT_ID]["aws"].buckets


def _snapshot_s3_objects(buckets: list[dict[str, Any]]) -> None:
    from moto.s3.models import FakeDeleteMarker

    s3_buckets = _s3_buckets()
    for bucket in buckets:
        fake = s3_buckets.get(bucket["name"])
        if fake is None:
            continue
        for key in list(fake.keys):
            for version in fake.keys.getlist(key, []):
                kept = {"key": key, "version_id": version.version_id,
                        "last_modified": version.last_modified.isoformat()}
                if isinstance(version, FakeDeleteMarker):
                    bucket["objects"].append({**kept, "deleted": True})
                    continue
                metadata = dict(version.metadata or {})
                bucket["objects"].append({
                    **kept,
                    "body": base64.b64encode(version.value).decode("ascii"),
                    "headers": {param: metadata[h] for h, param in _OBJECT_HEADERS.items() if metadata.get(h)},
                    "metadata": {k[len("x-amz-meta-"):]: v for k, v in metadata.items()
                                 if k.lower().startswith("x-amz-meta-")},
                })


def _snapshot_sqs_messages(queues: list[dict[str, Any]]) -> None:
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.sqs.models import sqs_backends

    for queue in queues:
        fake_queue = sqs_backends[DEFAULT_ACCOUNT_ID][queue["region"]].queues.get(queue["name"])
        if fake_queue is None:
            continue
        for message in list(fake_queue._messages):  # visible, delayed and in flight: all not yet deleted
            queue["messages"].append({
                "body": message.body,
                "attributes": {name: _json_safe(value) for name, value in (message.message_attributes or {}).items()},
                "group_id": message.group_id,
                "deduplication_id": message.deduplication_id,
            })


def _json_safe(attribute: dict[str, Any]) -> dict[str, Any]:
    value = dict(attribute)
    if isinstance(value.get("BinaryValue"), bytes):
        value["BinaryValue"] = {"base64": base64.b64encode(value["BinaryValue"]).decode("ascii")}
    return value


def _from_json(attribute: dict[str, Any]) -> dict[str, Any]:
    value = {k: v for k, v in attribute.items() if k in ("DataType", "StringValue", "BinaryValue")}
    if isinstance(value.get("BinaryValue"), dict):
        value["BinaryValue"] = base64.b64decode(value["BinaryValue"]["base64"])
    return value


def summary(snapshot: dict[str, Any]) -> dict[str, int]:
    return {
        "buckets": len(snapshot["s3"]),
        "object versions": sum(1 for b in snapshot["s3"] for o in b["objects"] if not o.get("deleted")),
        "queues": len(snapshot["sqs"]),
        "messages": sum(len(q["messages"]) for q in snapshot["sqs"]),
        "topics": len(snapshot["sns"]),
        "subscriptions": sum(len(t["subscriptions"]) for t in snapshot["sns"]),
    }


def restore(endpoint: str, snapshot: dict[str, Any]) -> dict[str, int]:
    """Put a snapshot back through the API of a fresh moto server running in this process."""
    if snapshot.get("format") not in _READABLE_FORMATS:
        raise ValueError(f"moto state format {snapshot.get('format')!r} is not one of {_READABLE_FORMATS}")
    version_ids = _restore_s3(endpoint, snapshot["s3"])
    _restore_sqs(endpoint, snapshot["sqs"])
    _restore_sns(endpoint, snapshot["sns"])
    return {**summary(snapshot), "version ids kept": len(version_ids)}


def _restore_s3(endpoint: str, buckets: list[dict[str, Any]]) -> dict[str, str]:
    """Buckets and their object versions; returns each recorded version id -> the id moto now serves.

    Every recorded id is set back (:func:`_keep_version_ids`), so the map is the identity; a
    version missing from it (format 1) is served under a new id.
    """
    s3 = _client("s3", endpoint)
    version_ids: dict[str, str] = {}
    for bucket in buckets:
        name, region = bucket["name"], bucket["region"]
        if region == "us-east-1":
            s3.create_bucket(Bucket=name)
        else:
            s3.create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": region})
        if bucket["encryption"]:
            s3.put_bucket_encryption(Bucket=name, ServerSideEncryptionConfiguration=bucket["encryption"])
        if bucket["versioning"]:  # versions are re-made while versioning is on, then the recorded status is set
            s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
        put: dict[str, dict[str, Any]] = {}  # the id the API gave -> the recorded version
        for obj in bucket["objects"]:
            if obj.get("deleted"):
                response = s3.delete_object(Bucket=name, Key=obj["key"])
            else:
                response = s3.put_object(Bucket=name, Key=obj["key"], Body=base64.b64decode(obj["body"]),
                                         Metadata=obj["metadata"], **obj["headers"])
            put[response.get("VersionId") or "null"] = obj
        version_ids.update(_keep_version_ids(name, put))
        if bucket["versioning"]:
            s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": bucket["versioning"]})
        if bucket["policy"]:
            s3.put_bucket_policy(Bucket=name, Policy=bucket["policy"])
        if bucket["tags"]:
            s3.put_bucket_tagging(Bucket=name, Tagging={"TagSet": bucket["tags"]})
        if bucket["public_access_block"]:
            s3.put_public_access_block(Bucket=name, PublicAccessBlockConfiguration=bucket["public_access_block"])
    return version_ids


def _keep_version_ids(bucket_name: str, put: dict[str, dict[str, Any]]) -> dict[str, str]:
    """Give the versions just put their recorded ids and times back, in moto's memory.

    S3's API has no way to choose a version id, but moto keeps it as a plain attribute
    of the version, and the server runs in this process.
    """
    fake = _s3_buckets()[bucket_name]
    kept: dict[str, str] = {}
    for key in list(fake.keys):
        for version in fake.keys.getlist(key, []):
            recorded = put.get(version.version_id)
            if recorded is None or not recorded.get("version_id"):
                continue  # a snapshot of format 1: the new id stays
            kept[recorded["version_id"]] = recorded["version_id"]
            version._version_id = recorded["version_id"]  # moto itself keeps "null" for unversioned puts
            version.last_modified = datetime.datetime.fromisoformat(recorded["last_modified"])
    return kept


def _restore_sqs(endpoint: str, queues: list[dict[str, Any]]) -> None:
    urls: dict[tuple[str, str], str] = {}
    for queue in queues:
        sqs = _client("sqs", endpoint, queue["region"])
        first = {k: v for k, v in queue["attributes"].items() if k not in _QUEUE_AFTER_ALL}
        urls[(queue["region"], queue["name"])] = sqs.create_queue(
            QueueName=queue["name"], Attributes=first, **({"tags": queue["tags"]} if queue["tags"] else {})
        )["QueueUrl"]
    for queue in queues:
        sqs = _client("sqs", endpoint, queue["region"])
        url = urls[(queue["region"], queue["name"])]
        later = {k: v for k, v in queue["attributes"].items() if k in _QUEUE_AFTER_ALL}
        if later:
            sqs.set_queue_attributes(QueueUrl=url, Attributes=later)
        for message in queue["messages"]:
            extra: dict[str, Any] = {}
            if message.get("group_id"):
                extra["MessageGroupId"] = message["group_id"]
            if message.get("deduplication_id"):
                extra["MessageDeduplicationId"] = message["deduplication_id"]
            if message["attributes"]:
                extra["MessageAttributes"] = {k: _from_json(v) for k, v in message["attributes"].items()}
            sqs.send_message(QueueUrl=url, MessageBody=message["body"], DelaySeconds=0, **extra)


def _restore_sns(endpoint: str, topics: list[dict[str, Any]]) -> None:
    for topic in topics:
        sns = _client("sns", endpoint, topic["region"])
        arn = sns.create_topic(Name=topic["name"], Attributes=topic["attributes"],
                               **({"Tags": topic["tags"]} if topic["tags"] else {}))["TopicArn"]
        for sub in topic["subscriptions"]:
            sns.subscribe(TopicArn=arn, Protocol=sub["protocol"], Endpoint=sub["endpoint"],
                          Attributes=sub["attributes"], ReturnSubscriptionArn=True)


# -- the Procfile's gate -------------------------------------------------------
