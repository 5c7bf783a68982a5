"""``infra/`` (Terraform) and ``pudato infra up`` (pudato/infra.py) must create the same things,
and each process's IAM role allows what it does and nothing more.

The Terraform is read by the small evaluator in ``terraform_hcl.py``; the roles are
judged by its IAM simulator (an explicit Deny wins, else some Allow must match).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from terraform_hcl import (
    ACCOUNT,
    SQS_DEFAULT_VISIBILITY_S,
    Ref,
    Terraform,
    _as_list,
    _unquote,
    allowed,
    role_documents,
    statements,
)

from pudato import infra
from pudato.protocol import HANDLERS
from pudato.settings import QUEUE_PREFIX, Settings

INFRA_DIR = Path(__file__).resolve().parents[2] / "infra"

# -- fixtures -----------------------------------------------------------------


@pytest.fixture(scope="module")
def tf() -> Terraform:
    return Terraform(INFRA_DIR)


@pytest.fixture(scope="module")
def settings() -> Settings:
    """The defaults, whatever a stack started earlier in this session put into the environment."""
    with pytest.MonkeyPatch.context() as patch:
        for name in [n for n in os.environ if n.startswith("PUDATO_")]:
            patch.delenv(name)
        return Settings(_env_file=None)


def terraform_queues(tf: Terraform) -> set[infra.QueueSpec]:
    specs = set()
    for (_, _), queue in tf.instances("aws_sqs_queue").items():
        dlq = max_receive = None
        if "redrive_policy" in queue:
            policy = queue["redrive_policy"]
            assert isinstance(policy, dict), "redrive_policy should be jsonencode({...})"
            assert set(policy) == {"deadLetterTargetArn", "maxReceiveCount"}, policy
            dlq = tf.attribute(policy["deadLetterTargetArn"])
            max_receive = policy["maxReceiveCount"]
        specs.add(
            infra.QueueSpec(
                queue["name"], queue.get("visibility_timeout_seconds", SQS_DEFAULT_VISIBILITY_S), dlq, max_receive
            )
        )
    return specs


# -- tests --------------------------------------------------------------------


def test_queue_variable_defaults_match_settings(tf: Terraform, settings: Settings) -> None:
    expected = {
        handler: {"visibility_timeout_s": q.visibility_timeout_s, "max_receive_count": q.max_receive_count}
        for handler, q in settings.broker.queues.items()
    }
    assert tf.variables["queues"] == expected
    assert set(tf.variables["queues"]) == set(HANDLERS)


def test_name_prefix_matches_the_workers_queue_prefix(tf: Terraform) -> None:
    assert f"{tf.variables['name_prefix']}-" == QUEUE_PREFIX


def test_same_queues_with_same_settings(tf: Terraform, settings: Settings) -> None:
    declared_names = [q.name for q in infra.declared_queues(settings)]
    assert len(declared_names) == len(set(declared_names)), "pudato.infra declares a queue twice"
    terraform_names = [q["name"] for q in tf.instances("aws_sqs_queue").values()]
    assert len(terraform_names) == len(set(terraform_names)), "Terraform declares a queue twice"
    declared = set(infra.declared_queues(settings))
    terraform = terraform_queues(tf)
    assert {q.name for q in terraform} == {q.name for q in declared}
    # Name, visibility timeout, dead-letter queue and max receive count, queue by queue.
    assert terraform == declared


def test_every_handler_queue_redrives_to_its_own_dlq(tf: Terraform, settings: Settings) -> None:
    by_name = {q.name: q for q in terraform_queues(tf)}
    for handler in HANDLERS:
        queue = by_name[settings.queue_name(handler)]
        assert queue.dead_letter_queue == settings.dead_letter_queue_name(handler)
        assert queue.max_receive_count == settings.broker.queues[handler].max_receive_count
        dlq = by_name[settings.dead_letter_queue_name(handler)]
        assert dlq.dead_letter_queue is None
        assert dlq.visibility_timeout_s == queue.visibility_timeout_s


def test_message_retention_matches(tf: Terraform, settings: Settings) -> None:
    # `pudato infra up` keeps messages 14 days on every queue without a DLQ of its own
    # (the DLQs and the audit queues) and leaves the handler queues at the SQS default.
    retention = {q["name"]: q.get("message_retention_seconds") for q in tf.instances("aws_sqs_queue").values()}
    for spec in infra.declared_queues(settings):
        expected = None if spec.dead_letter_queue else infra.DLQ_RETENTION_S
        assert retention[spec.name] == expected, spec.name


def test_same_topics(tf: Terraform, settings: Settings) -> None:
    topics = [t["name"] for t in tf.instances("aws_sns_topic").values()]
    assert sorted(topics) == sorted(infra.declared_topics(settings))
    assert tf.variables["results_topic"] == settings.fanout.results_topic
    assert tf.variables["events_topic"] == settings.fanout.events_topic


def test_same_subscriptions_with_raw_delivery(tf: Terraform, settings: Settings) -> None:
    subscriptions = []
    for sub in tf.instances("aws_sns_topic_subscription").values():
        assert sub["protocol"] == "sqs"
        assert sub["raw_message_delivery"] is True
        assert sub["endpoint"].attr == "arn"
        assert sub["topic_arn"].attr == "arn"
        subscriptions.append(infra.SubscriptionSpec(tf.attribute(sub["topic_arn"]), tf.attribute(sub["endpoint"])))
    assert sorted(subscriptions, key=repr) == sorted(infra.declared_subscriptions(settings), key=repr)


def test_each_subscribed_queue_lets_only_its_topic_send(tf: Terraform, settings: Settings) -> None:
    policies = {}
    for policy in tf.instances("aws_sqs_queue_policy").values():
        policies[tf.attribute(policy["queue_url"])] = tf.attribute(policy["policy"])
    assert set(policies) == {sub.queue for sub in infra.declared_subscriptions(settings)}
    for sub in infra.declared_subscriptions(settings):
        document = policies[sub.queue]
        statements = _as_list(document["statement"])
        assert len(statements) == 1
        statement = statements[0]
        assert statement.get("effect", "Allow") == "Allow"
        assert statement["actions"] == ["sqs:SendMessage"]
        assert [tf.attribute(r) for r in statement["resources"]] == [sub.queue]
        principals = _as_list(statement["principals"])
        assert [(p["type"], p["identifiers"]) for p in principals] == [("Service", ["sns.amazonaws.com"])]
        conditions = _as_list(statement["condition"])
        assert [(c["test"], c["variable"]) for c in conditions] == [("ArnEquals", "aws:SourceArn")]
        assert [tf.attribute(v) for v in conditions[0]["values"]] == [sub.topic]


def test_same_bucket_and_region(tf: Terraform, settings: Settings) -> None:
    assert tf.variables["bucket_name"] == settings.storage.bucket
    assert tf.variables["region"] == settings.aws.region
    buckets = [b["bucket"] for b in tf.instances("aws_s3_bucket").values()]
    assert buckets == [settings.storage.bucket]


def _actions(tf: Terraform, document: str) -> set[str]:
    body = tf.data[("aws_iam_policy_document", document)]
    statements = _as_list(body["statement"])
    return {action for statement in statements for action in _as_list(tf.evaluate(statement["actions"]))}


def _unquoted_list(values: Any) -> list[str]:
    return [_unquote(v) for v in _as_list(values)]


# Celery monitoring (workers/transport.py): each process's own queue, and the sweep of stopped ones.
MONITORING_ACTIONS = {
    "sqs:ChangeMessageVisibility", "sqs:CreateQueue", "sqs:DeleteMessage", "sqs:DeleteQueue",
    "sqs:GetQueueAttributes", "sqs:GetQueueUrl", "sqs:ListQueueTags", "sqs:ReceiveMessage", "sqs:SendMessage",
    "sqs:SetQueueAttributes", "sqs:TagQueue",
    "sns:CreateTopic", "sns:ListSubscriptionsByTopic", "sns:Publish", "sns:Subscribe", "sns:TagResource",
    "sns:Unsubscribe",
}


def _actions_of(tf: Terraform, document: str, sid: str) -> tuple[set[str], list[str]]:
    body = tf.data[("aws_iam_policy_document", document)]
    (statement,) = [s for s in _as_list(body["statement"]) if _unquote(s["sid"]) == sid]
    actions, resources = tf.evaluate(statement["actions"]), tf.evaluate(statement["resources"])
    return set(_as_list(actions)), _as_list(resources)


ROLE_DOCUMENTS = {handler: handler for handler in HANDLERS} | {"common": "worker_common", "beat": "beat",
                                                              "flower": "flower", "lake": "lake"}
CONSUME = {"sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:ChangeMessageVisibility", "sqs:GetQueueUrl",
           "sqs:GetQueueAttributes"}


def _allowed_actions(tf: Terraform, document: str) -> set[str]:
    return {a for s in statements(tf, document) if s.effect == "Allow" for a in s.actions}


def test_iam_policies_grant_what_each_process_uses(tf: Terraform) -> None:
    assert _actions(tf, "worker_common") == {"sqs:ListQueues", "sns:Publish", "sns:ListTopics"} | MONITORING_ACTIONS
    lake_write = {"s3:ListBucket", "s3:PutObject", "s3:AbortMultipartUpload"}
    assert _allowed_actions(tf, "storage") == CONSUME | {
        "sqs:SendMessage", "s3:ListBucket", "s3:GetObject", "s3:GetObjectVersion", "s3:PutObject",
        "s3:DeleteObject", "s3:AbortMultipartUpload"}
    assert _allowed_actions(tf, "table") == CONSUME | lake_write | {
        "sqs:SendMessage", "s3:GetObject", "s3:GetObjectVersion", "s3:DeleteObject"}
    assert _allowed_actions(tf, "query") == CONSUME | lake_write | {
        "sqs:SendMessage", "s3:GetObject", "s3:GetObjectVersion"}
    assert _allowed_actions(tf, "catalog") == CONSUME | {"sqs:SendMessage"}
    assert _allowed_actions(tf, "transform") == CONSUME | lake_write | {"sqs:SendMessage", "s3:GetObject"}
    assert _actions(tf, "beat") == {
        "sqs:SendMessage", "sqs:GetQueueUrl", "sqs:ListQueues", "sns:CreateTopic", "sns:Publish", "sns:TagResource",
    }
    assert _actions(tf, "flower") == {
        "sqs:GetQueueAttributes", "sqs:GetQueueUrl", "sqs:ListQueues",
    } | MONITORING_ACTIONS
    for document in ROLE_DOCUMENTS.values():
        for statement in statements(tf, document):
            if statement.effect == "Allow" and "*" in (statement.resources or ()):
                # Only the actions that have no resource-level permissions get "*".
                assert statement.actions <= {"sqs:ListQueues", "sns:ListTopics", "sns:Unsubscribe"}, statement


def test_monitoring_grants_only_the_celery_topics_and_queues(tf: Terraform, settings: Settings) -> None:
    region = settings.aws.region
    topics = [f"arn:aws:sns:{region}:*:celeryev", f"arn:aws:sns:{region}:*:celery-pidbox"]
    queues = [f"arn:aws:sqs:{region}:*:celeryev-*", f"arn:aws:sqs:{region}:*:*-celery-pidbox"]
    for document in ("worker_common", "flower"):
        actions, resources = _actions_of(tf, document, "MonitoringQueues")
        assert actions == {a for a in MONITORING_ACTIONS if a.startswith("sqs:")}
        assert resources == queues
        actions, resources = _actions_of(tf, document, "MonitoringTopics")
        assert actions == {a for a in MONITORING_ACTIONS if a.startswith("sns:")} - {"sns:Unsubscribe"}
        assert resources == topics
        assert _actions_of(tf, document, "MonitoringUnsubscribe") == ({"sns:Unsubscribe"}, ["*"])
    # beat sends tasks, and so their task-sent events: only to the events topic.
    actions, resources = _actions_of(tf, "beat", "TaskSentEvents")
    assert actions == {"sns:CreateTopic", "sns:Publish", "sns:TagResource"}
    assert resources == topics[:1]


def test_same_bucket_lifecycle(tf: Terraform, settings: Settings) -> None:
    (lifecycle,) = tf.instances("aws_s3_bucket_lifecycle_configuration").values()
    assert tf.attribute(lifecycle["bucket"]) == settings.storage.bucket
    (expected,) = infra.lifecycle_rules(settings)
    (rule,) = _as_list(lifecycle["rule"])
    assert rule["id"] == expected["ID"]
    assert rule["status"] == expected["Status"]
    assert _as_list(rule["filter"])[0]["prefix"] == expected["Filter"]["Prefix"]
    assert (_as_list(rule["noncurrent_version_expiration"])[0]["noncurrent_days"]
            == expected["NoncurrentVersionExpiration"]["NoncurrentDays"])  # fmt: skip
    assert (_as_list(rule["abort_incomplete_multipart_upload"])[0]["days_after_initiation"]
            == expected["AbortIncompleteMultipartUpload"]["DaysAfterInitiation"])  # fmt: skip
    assert tf.variables["version_retention_days"] == settings.storage.version_retention_days


def test_lake_policy_covers_the_data_prefix_the_workers_use(tf: Terraform, settings: Settings) -> None:
    from pudato.backends.warehouse.ducklake import default_data_path

    prefix = default_data_path(settings).removeprefix(f"s3://{settings.storage.bucket}/")
    assert tf.variables["lake_prefix"] == prefix
    assert tf.variables["lake_catalog_database"] == settings.warehouse.catalog_database
    body = tf.data[("aws_iam_policy_document", "lake")]
    (statement,) = [s for s in _as_list(body["statement"]) if _unquote(s["sid"]) == "LakeFiles"]
    assert set(_unquoted_list(statement["actions"])) == {
        "s3:AbortMultipartUpload", "s3:DeleteObject", "s3:GetObject", "s3:PutObject"}
    # The bucket's objects under the prefix, and nothing else.
    assert _unquoted_list(statement["resources"]) == ["${aws_s3_bucket.storage.arn}/${var.lake_prefix}*"]


# -- one role per handler, each allowed only what it does ---------------------------------------


def test_each_handler_runs_under_a_role_of_its_own(tf: Terraform, settings: Settings) -> None:
    roles = tf.instances("aws_iam_role", only="handler")
    assert {key for (_, key) in roles} == set(HANDLERS)
    assert len({role["name"] for role in roles.values()}) == len(HANDLERS)
    for handler in HANDLERS:
        # Its own policy, and the one every worker shares; nothing else.
        assert sorted(role_documents(tf, "handler", handler)) == sorted([handler, "worker_common"])
        # It consumes its own queue and no other handler's.
        for other in HANDLERS:
            queue = _queue_arn(settings, other)
            assert allowed(tf, _docs(tf, handler), "sqs:ReceiveMessage", queue) == (other == handler)
            assert allowed(tf, _docs(tf, handler), "sqs:DeleteMessage", queue) == (other == handler)
    assert role_documents(tf, "beat") == ["beat"]
    assert role_documents(tf, "flower") == ["flower"]


def _docs(tf: Terraform, handler: str) -> list[str]:
    return role_documents(tf, "handler", handler)


def _queue_arn(settings: Settings, handler: str) -> str:
    return f"arn:aws:sqs:{settings.aws.region}:{ACCOUNT}:{settings.queue_name(handler)}"


def _object(settings: Settings, key: str) -> str:
    return f"arn:aws:s3:::{settings.storage.bucket}/{key}"


def test_the_transform_role_cannot_delete_reach_outside_the_lake_or_send_onward(
        tf: Terraform, settings: Settings) -> None:
    docs = _docs(tf, "transform")
    lake = tf.variables["lake_prefix"]
    for key in (f"{lake}main/fct/data_0.parquet", "raw/a.csv", "results/out.parquet"):
        assert not allowed(tf, docs, "s3:DeleteObject", _object(settings, key)), key
        assert not allowed(tf, docs, "s3:DeleteObjectVersion", _object(settings, key)), key
    assert allowed(tf, docs, "s3:PutObject", _object(settings, f"{lake}main/fct/data_0.parquet"))
    assert allowed(tf, docs, "s3:GetObject", _object(settings, f"{lake}main/fct/data_0.parquet"))
    assert not allowed(tf, docs, "s3:GetObject", _object(settings, "raw/a.csv"))
    assert not allowed(tf, docs, "s3:PutObject", _object(settings, "raw/a.csv"))
    bucket = f"arn:aws:s3:::{settings.storage.bucket}"
    assert allowed(tf, docs, "s3:ListBucket", bucket, {"s3:prefix": f"{lake}main/"})
    assert not allowed(tf, docs, "s3:ListBucket", bucket, {"s3:prefix": "raw/"})
    for handler in HANDLERS:
        assert allowed(tf, docs, "sqs:SendMessage", _queue_arn(settings, handler)) == (handler == "transform")
        assert not allowed(tf, docs, "sqs:SendMessage", _queue_arn(settings, handler) + "-dlq")
    # It still answers remote control (Flower, `celery inspect`) through the monitoring queues.
    reply = f"arn:aws:sqs:{settings.aws.region}:{ACCOUNT}:0f1e-reply-celery-pidbox"
    assert allowed(tf, docs, "sqs:SendMessage", reply)
    # The Deny statements hold even if someone attaches a broader policy later, e.g. the lake's.
    assert not allowed(tf, [*docs, "lake"], "s3:DeleteObject", _object(settings, f"{lake}x.parquet"))


def test_no_handler_but_table_writes_the_lake_and_none_writes_it_through_storage(
        tf: Terraform, settings: Settings) -> None:
    lake_file = _object(settings, f"{tf.variables['lake_prefix']}main/t/data_0.parquet")
    writes = {h: allowed(tf, _docs(tf, h), "s3:PutObject", lake_file) for h in HANDLERS}
    assert writes == {"storage": False, "query": False, "table": True, "catalog": False, "transform": True}
    assert not allowed(tf, _docs(tf, "storage"), "s3:DeleteObject", lake_file)
    for handler in ("storage", "query"):
        assert allowed(tf, _docs(tf, handler), "s3:PutObject", _object(settings, "results/q.parquet")), handler
    # Exact reruns read objects by version id.
    for handler in ("storage", "table", "query"):
        assert allowed(tf, _docs(tf, handler), "s3:GetObjectVersion", _object(settings, "raw/a.csv")), handler
    assert not any(allowed(tf, _docs(tf, "catalog"), action, _object(settings, "raw/a.csv"))
                   for action in ("s3:GetObject", "s3:PutObject", "s3:DeleteObject"))


def test_no_worker_role_reads_a_secret(tf: Terraform) -> None:
    secrets = list(tf.instances("aws_secretsmanager_secret"))
    assert {name for name, _ in secrets} >= {"registry_url", "lake_catalog", "flower_basic_auth"}
    arns = [tf.arn(Ref("resource", "aws_secretsmanager_secret", name, key, "arn")) for name, key in secrets]
    for handler in HANDLERS:
        assert not any(allowed(tf, _docs(tf, handler), "secretsmanager:GetSecretValue", arn) for arn in arns)
    execution = role_documents(tf, "execution")
    assert all(allowed(tf, execution, "secretsmanager:GetSecretValue", arn) for arn in arns)
