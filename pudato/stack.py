"""The local stack's services, each in the foreground so that a process manager (honcho) runs them.

``pudato local postgres`` (:func:`run_postgres`): a project-local PostgreSQL cluster,
created on first start, with a ``pudato`` database.

``pudato local aws`` (:func:`run_moto`): moto's server, with its state kept across
restarts where moto allows. moto 5.2.5 has no way to save or load its state: its
``/moto-api/`` offers reset, state-manager transitions and a *recorder* that appends
every request to a file and can replay them. Replaying does not rebuild this stack's
state: a replayed ``UploadPart`` names an upload id the new server never issued (so
objects DuckDB wrote with multipart uploads are lost), a replayed ``DeleteMessage``
names a receipt handle that no longer exists (so every message ever sent is delivered
again), and the file grows with every one of the workers' long polls. So instead, at a
clean stop, this module takes a snapshot of the three services Pudato uses and at the
next start puts it back through the ordinary AWS API:

* S3: buckets (region, versioning, default encryption, public access block, policy,
  tags) and every object version and delete marker in order, with content, content
  type, encoding and user metadata. Version ids and timestamps are new (so version
  ids recorded in the registry no longer match); object tags and ACLs are not kept.
* SQS: queues with their attributes (redrive policies included) and tags, and every
  message not yet deleted (visible, delayed or in flight) with its attributes, sent
  again as a new visible message: new message id, receive count back to 0, no delay.
  Queues Celery makes for one process (``celeryev-*``, ``*pidbox*``) and their
  subscriptions are left out.
* SNS: topics with their attributes and tags, and their subscriptions with their
  attributes (new subscription ARNs).

Nothing else moto emulates is kept. The snapshot is written when the server stops on
SIGINT or SIGTERM; a server killed with SIGKILL keeps the previous snapshot.

``python -m pudato.stack wait [--services]``: the Procfile's gate. With ``--services``
it waits until moto and the registry database answer; without, until the stack is
ready for workers: every queue and the bucket exist and the registry is migrated.
``python -m pudato.stack bounded --grace S -- COMMAND``: COMMAND gets S seconds to
stop on SIGTERM, then SIGKILL (Flower, which can hang while stopping).
"""

from __future__ import annotations

import base64
import functools
import json
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pudato.local import _pg_bin, _postgres_user_prefix

DATABASE = "pudato"
SMART_SHUTDOWN_S = 2.0  # how long PostgreSQL waits for its clients to go before a fast shutdown
STATE_FORMAT = 1
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


def _say(message: str) -> None:
    print(message, flush=True)  # honcho reads a pipe: without flush, lines arrive at exit


def _on_stop_signals(handler: Callable[[int], None]) -> None:
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda number, _frame: handler(number))


def _later(delay: float, action: Callable[[], None]) -> None:
    timer = threading.Timer(delay, action)
    timer.daemon = True  # never keeps this process alive once its child has gone
    timer.start()


def _die_with_parent() -> None:
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def run_bounded(command: list[str], grace: float) -> int:
    """Run ``command``; on SIGINT or SIGTERM pass SIGTERM on, and SIGKILL it if it is still there after ``grace``.

    For a process with nothing to save whose own shutdown can hang (Flower stopping in
    the middle of its first inspection of the workers, once moto has gone, retries the
    broker for ever): it goes within ``grace`` instead of holding up the whole stack.
    """
    # In a process group of its own, so that a signal to ours (honcho signals the group) reaches it
    # once, from here; on Linux it is killed if this wrapper dies first.
    # No other thread runs yet, so preexec_fn is safe here.
    child = subprocess.Popen(command, start_new_session=True, preexec_fn=_die_with_parent)  # noqa: PLW1509
    stopping = threading.Event()

    def stop(_signum: int) -> None:
        if stopping.is_set():
            return
        stopping.set()
        if child.poll() is None:
            child.terminate()
            _later(grace, lambda: child.poll() is None and os.killpg(child.pid, signal.SIGKILL))

    _on_stop_signals(stop)
    code = child.wait()
    return 0 if stopping.is_set() else code


# -- PostgreSQL ----------------------------------------------------------------


def run_postgres(folder: Path, port: int) -> None:
    """Run the cluster in ``folder`` (made on first start) until SIGINT or SIGTERM, then stop it.

    On the signal, PostgreSQL gets :data:`SMART_SHUTDOWN_S` for its clients to disconnect
    (a smart shutdown), then a fast shutdown; a second signal makes it fast at once.

    As root, the cluster belongs to the ``postgres`` user (initdb and postgres refuse
    root), so ``folder`` and every folder above it must be reachable by that user.
    """
    folder = folder.resolve()
    folder.mkdir(parents=True, exist_ok=True)
    data = folder / "data"
    as_user = _postgres_user_prefix(folder)  # as root: chown the folder to postgres, run as postgres
    if not (data / "PG_VERSION").exists():
        created = subprocess.run(
            [*as_user, _pg_bin("initdb"), "-D", str(data), "-A", "trust", "-U", "postgres", "-E", "UTF8"],
            capture_output=True, text=True, check=False,
        )
        if created.returncode != 0:
            raise RuntimeError(f"initdb failed in {data}:\n{created.stdout}{created.stderr}")
        _say(f"created a PostgreSQL cluster in {data}")
    run_as = {"user": "postgres", "group": "postgres", "extra_groups": []} if as_user else {}
    # Not in a session of its own: if this wrapper is killed, the process group's kill reaches postgres too.
    server = subprocess.Popen(
        [_pg_bin("postgres"), "-D", str(data), "-p", str(port), "-k", str(folder),
         "-c", "listen_addresses=127.0.0.1"],
        **run_as,  # type: ignore[arg-type]
    )
    stopping = threading.Event()

    def fast() -> None:
        if server.poll() is None:
            server.send_signal(signal.SIGINT)  # PostgreSQL's fast shutdown: roll back, disconnect, stop

    def stop(_signum: int) -> None:
        if stopping.is_set():
            return fast()  # a second signal: no more waiting
        stopping.set()
        if server.poll() is None:
            # A smart shutdown first, so that workers stopping beside us write their last records;
            # fast after a moment at most, well within a process manager's patience (honcho: 5 s).
            server.send_signal(signal.SIGTERM)
            _later(SMART_SHUTDOWN_S, fast)

    _on_stop_signals(stop)
    try:
        _ensure_database(port, server, stopping)
        if not stopping.is_set():
            _say(f"postgres ready on 127.0.0.1:{port}, database {DATABASE!r} (cluster {data})")
    except Exception:
        stopping.set()
        fast()
        server.wait()
        raise
    code = server.wait()
    if stopping.is_set():
        _say("postgres stopped")
        return
    raise RuntimeError(f"postgres exited with code {code}")


def _ensure_database(port: int, server: subprocess.Popen[Any], stopping: threading.Event,
                     timeout: float = 60.0) -> None:
    import psycopg2

    deadline = time.monotonic() + timeout
    while not stopping.is_set():
        if server.poll() is not None:
            raise RuntimeError(f"postgres exited with code {server.returncode} before it accepted connections")
        try:
            connection = psycopg2.connect(host="127.0.0.1", port=port, user="postgres", dbname="postgres",
                                          connect_timeout=2)
        except psycopg2.OperationalError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"postgres did not accept connections on port {port} within {timeout:.0f}s")
            time.sleep(0.2)
            continue
        try:
            connection.autocommit = True
            with connection.cursor() as cursor:
                cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,))
                if cursor.fetchone() is None:
                    cursor.execute(f'CREATE DATABASE "{DATABASE}"')
                    _say(f"created database {DATABASE!r}")
        finally:
            connection.close()
        return


# -- moto ----------------------------------------------------------------------


def run_moto(port: int, state_path: Path) -> None:
    """Run moto's server on 127.0.0.1:``port`` until SIGINT or SIGTERM.

    At start, the snapshot at ``state_path`` (if any) is put back; at a clean stop a new
    one replaces it. See the module's docstring for what a snapshot holds.
    """
    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )
    from werkzeug.serving import make_server

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # not a line per request (workers poll)
    os.environ.setdefault("MOTO_PORT", str(port))  # as moto.server sets it: some URLs moto makes carry it
    state_path = state_path.resolve()
    # As moto's ThreadedMotoServer does, but binding here: a port in use fails now instead of hanging.
    httpd = make_server("127.0.0.1", port, DomainDispatcherApplication(create_backend_app), threaded=True,
                        request_handler=MotoRequestHandler)
    serving = threading.Thread(target=httpd.serve_forever, name="moto", daemon=True)
    serving.start()
    endpoint = f"http://127.0.0.1:{port}"
    stopping = threading.Event()
    _on_stop_signals(lambda _signum: stopping.set())
    try:
        if state_path.exists():
            started = time.monotonic()
            try:
                counts = restore(endpoint, json.loads(state_path.read_text()))
            except Exception as exc:
                raise RuntimeError(f"could not restore moto's state from {state_path} ({exc}); "
                                   "move the file away to start with an empty moto") from exc
            _say(f"restored moto's state from {state_path} in {time.monotonic() - started:.1f}s: {_counts(counts)}")
        _say(f"moto ready on {endpoint}")
        while not stopping.wait(0.5):
            pass
        # Still serving while the configuration is read: workers stopping beside us can ack their last tasks.
        snapshot = snapshot_api(endpoint)
    finally:
        httpd.shutdown()
        serving.join(5)
        httpd.server_close()
    snapshot_backends(snapshot)
    _write_atomically(state_path, json.dumps(snapshot))
    _say(f"saved moto's state to {state_path}: {_counts(summary(snapshot))}")


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{value} {name}" for name, value in counts.items())


def _write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    partial.write_text(text)
    os.replace(partial, path)


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
    from botocore.exceptions import ClientError

    def optional(call: Callable[..., dict[str, Any]], **kwargs: Any) -> dict[str, Any] | None:
        try:
            response = call(**kwargs)
        except ClientError:
            return None  # e.g. NoSuchBucketPolicy: the setting is absent
        response.pop("ResponseMetadata", None)
        return response

    s3 = _client("s3", endpoint)
    buckets = []
    for bucket in s3.list_buckets().get("Buckets", []):
        name = bucket["Name"]
        buckets.append({
            "name": name,
            "region": (optional(s3.get_bucket_location, Bucket=name) or {}).get("LocationConstraint") or "us-east-1",
            "versioning": (optional(s3.get_bucket_versioning, Bucket=name) or {}).get("Status"),
            "encryption": (optional(s3.get_bucket_encryption, Bucket=name) or {}).get(
                "ServerSideEncryptionConfiguration"),
            "public_access_block": (optional(s3.get_public_access_block, Bucket=name) or {}).get(
                "PublicAccessBlockConfiguration"),
            "policy": (optional(s3.get_bucket_policy, Bucket=name) or {}).get("Policy"),
            "tags": (optional(s3.get_bucket_tagging, Bucket=name) or {}).get("TagSet"),
            "objects": [],
        })
    queues, topics = [], []
    for region in _regions():
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
    return {"format": STATE_FORMAT, "saved_at": time.time(), "s3": buckets, "sqs": queues, "sns": topics}


def _all(call: Callable[..., dict[str, Any]], key: str, **kwargs: Any) -> list[dict[str, Any]]:
    found, token = [], None
    while True:
        response = call(**kwargs, **({"NextToken": token} if token else {}))
        found += response.get(key, [])
        token = response.get("NextToken")
        if not token:
            return found


def snapshot_backends(snapshot: dict[str, Any]) -> None:
    """Add object contents and queued messages, read from moto's memory once the server has stopped.

    The API cannot give these: S3 has no call for the order of versions and delete
    markers, and reading a queue's messages would receive them (and count receives).
    """
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.s3.models import FakeDeleteMarker, s3_backends
    from moto.sqs.models import sqs_backends

    s3_buckets = s3_backends[DEFAULT_ACCOUNT_ID]["aws"].buckets
    for bucket in snapshot["s3"]:
        fake = s3_buckets.get(bucket["name"])
        if fake is None:
            continue
        for key in list(fake.keys):
            for version in fake.keys.getlist(key, []):
                if isinstance(version, FakeDeleteMarker):
                    bucket["objects"].append({"key": key, "deleted": True})
                    continue
                metadata = dict(version.metadata or {})
                bucket["objects"].append({
                    "key": key,
                    "body": base64.b64encode(version.value).decode("ascii"),
                    "headers": {param: metadata[h] for h, param in _OBJECT_HEADERS.items() if metadata.get(h)},
                    "metadata": {k[len("x-amz-meta-"):]: v for k, v in metadata.items()
                                 if k.lower().startswith("x-amz-meta-")},
                })
    for queue in snapshot["sqs"]:
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
    """Put a snapshot back through the API of a fresh moto server."""
    if snapshot.get("format") != STATE_FORMAT:
        raise ValueError(f"moto state format {snapshot.get('format')!r} is not {STATE_FORMAT}")
    s3 = _client("s3", endpoint)
    for bucket in snapshot["s3"]:
        name, region = bucket["name"], bucket["region"]
        if region == "us-east-1":
            s3.create_bucket(Bucket=name)
        else:
            s3.create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": region})
        if bucket["encryption"]:
            s3.put_bucket_encryption(Bucket=name, ServerSideEncryptionConfiguration=bucket["encryption"])
        if bucket["versioning"]:  # versions are re-made while versioning is on, then the recorded status is set
            s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
        for obj in bucket["objects"]:
            if obj.get("deleted"):
                s3.delete_object(Bucket=name, Key=obj["key"])
            else:
                s3.put_object(Bucket=name, Key=obj["key"], Body=base64.b64decode(obj["body"]),
                              Metadata=obj["metadata"], **obj["headers"])
        if bucket["versioning"]:
            s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": bucket["versioning"]})
        if bucket["policy"]:
            s3.put_bucket_policy(Bucket=name, Policy=bucket["policy"])
        if bucket["tags"]:
            s3.put_bucket_tagging(Bucket=name, Tagging={"TagSet": bucket["tags"]})
        if bucket["public_access_block"]:
            s3.put_public_access_block(Bucket=name, PublicAccessBlockConfiguration=bucket["public_access_block"])
    urls: dict[tuple[str, str], str] = {}
    for queue in snapshot["sqs"]:
        sqs = _client("sqs", endpoint, queue["region"])
        first = {k: v for k, v in queue["attributes"].items() if k not in _QUEUE_AFTER_ALL}
        urls[(queue["region"], queue["name"])] = sqs.create_queue(
            QueueName=queue["name"], Attributes=first, **({"tags": queue["tags"]} if queue["tags"] else {})
        )["QueueUrl"]
    for queue in snapshot["sqs"]:
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
    for topic in snapshot["sns"]:
        sns = _client("sns", endpoint, topic["region"])
        arn = sns.create_topic(Name=topic["name"], Attributes=topic["attributes"],
                               **({"Tags": topic["tags"]} if topic["tags"] else {}))["TopicArn"]
        for sub in topic["subscriptions"]:
            sns.subscribe(TopicArn=arn, Protocol=sub["protocol"], Endpoint=sub["endpoint"],
                          Attributes=sub["attributes"], ReturnSubscriptionArn=True)
    return summary(snapshot)


# -- the Procfile's gate -------------------------------------------------------


def services_answer() -> str | None:
    """None when moto and the registry database answer, else what does not."""
    from sqlalchemy import text

    from pudato import aws
    from pudato.registry.database import get_engine
    from pudato.settings import get_settings

    settings = get_settings()
    try:
        aws.client("sqs", settings.aws).list_queues()
    except Exception as exc:  # noqa: BLE001  (any failure means: not yet)
        return f"AWS endpoint {settings.aws.endpoint_url}: {exc}"
    try:
        with get_engine(settings.registry.url).connect() as connection:
            connection.execute(text("SELECT 1"))
    except Exception as exc:  # noqa: BLE001
        return f"registry: {str(exc).splitlines()[0]}"
    return None


def stack_ready() -> str | None:
    """None when workers can start: every queue and the bucket exist and the registry is migrated."""
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    from pudato import aws, infra
    from pudato.registry.database import get_engine
    from pudato.registry.migrate import alembic_config
    from pudato.settings import get_settings

    settings = get_settings()
    try:
        sqs = aws.client("sqs", settings.aws)
        for spec in infra.declared_queues(settings):
            sqs.get_queue_url(QueueName=spec.name)
        aws.client("s3", settings.aws).head_bucket(Bucket=settings.storage.bucket)
    except Exception as exc:  # noqa: BLE001  (any failure means: not yet)
        return f"infrastructure: {exc}"
    url = settings.registry.url
    try:
        heads = set(ScriptDirectory.from_config(alembic_config(url)).get_heads())
        with get_engine(url).connect() as connection:
            current = set(MigrationContext.configure(connection).get_current_heads())
    except Exception as exc:  # noqa: BLE001
        return f"registry: {str(exc).splitlines()[0]}"
    return None if current == heads else f"registry at {sorted(current)}, not {sorted(heads)}"


def wait_until(check: Callable[[], str | None], what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        problem = check()
        if problem is None:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not ready after {timeout:.0f}s: {problem}")
        time.sleep(0.5)


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m pudato.stack")
    commands = parser.add_subparsers(dest="command", required=True)
    wait = commands.add_parser("wait", help="Wait until the stack is ready for workers (queues, bucket, registry).")
    wait.add_argument("--services", action="store_true", help="Only wait until moto and the database answer.")
    wait.add_argument("--timeout", type=float, default=300.0)
    bounded = commands.add_parser("bounded", help="Run a command that gets GRACE seconds to stop, then SIGKILL.")
    bounded.add_argument("--grace", type=float, default=2.0)
    bounded.add_argument("argv", nargs=argparse.REMAINDER, help="-- COMMAND [ARG...]")
    args = parser.parse_args(argv)
    if args.command == "bounded":
        command = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
        if not command:
            parser.error("bounded needs a command after --")
        return run_bounded(command, args.grace)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stopped while waiting: just go
    try:
        if args.services:
            wait_until(services_answer, "moto and the registry database", args.timeout)
        else:
            wait_until(stack_ready, "the stack", args.timeout)
    except TimeoutError as exc:
        print(f"Error: {exc}", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
