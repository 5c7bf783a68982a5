"""``infra/`` (Terraform) and ``pudato infra up`` (pudato/infra.py) must create the same things.

The Terraform files are parsed with python-hcl2, and the few simple expressions
they use (``var.x``, ``local.x``, ``each.key``, ``each.value.x``, string
templates, ``jsonencode({...})`` and references to other resources) are
evaluated here, one instance per ``for_each`` key. Anything else is an error,
so that a change to the Terraform this evaluator does not understand fails
loudly rather than passing by accident.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hcl2  # python-hcl2, a dev dependency
import pytest

from pudato import infra
from pudato.protocol import HANDLERS
from pudato.settings import QUEUE_PREFIX, Settings

INFRA_DIR = Path(__file__).resolve().parents[2] / "infra"
SQS_DEFAULT_VISIBILITY_S = 30  # what AWS (and the aws provider) use when none is given


# -- reading the Terraform ----------------------------------------------------


def _unquote(text: str) -> str:
    """python-hcl2 v8 keeps the quotes of string literals: '"pudato"'; v4-v7 did not."""
    if len(text) >= 2 and text[0] == '"' and text[-1] == '"':
        return text[1:-1]
    return text


def _clean(value: Any) -> Any:
    """Drop python-hcl2's ``__is_block__``/``__comments__`` markers, recursively."""
    if isinstance(value, dict):
        return {_unquote(k): _clean(v) for k, v in value.items() if not (k.startswith("__") and k.endswith("__"))}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


@dataclass(frozen=True)
class Ref:
    """A reference to another resource's attribute: ``aws_sqs_queue.dlq[each.key].arn``."""

    kind: str  # "resource" or "data"
    type: str
    name: str
    key: Any  # the for_each key, or None
    attr: str


class Terraform:
    def __init__(self, folder: Path) -> None:
        files = sorted(folder.glob("*.tf"))
        assert files, f"no Terraform files in {folder}"
        self.variables: dict[str, Any] = {}
        self.raw_locals: dict[str, Any] = {}
        self.resources: dict[tuple[str, str], dict[str, Any]] = {}
        self.data: dict[tuple[str, str], dict[str, Any]] = {}
        for path in files:
            with path.open() as f:
                doc = hcl2.load(f)
            for block in doc.get("variable", []):
                for name, body in _clean(block).items():
                    assert name not in self.variables, f"variable {name} declared twice"
                    self.variables[name] = self.evaluate(body.get("default"))  # literals only
            for block in doc.get("locals", []):
                self.raw_locals.update(_clean(block))
            for kind, target in (("resource", self.resources), ("data", self.data)):
                for block in doc.get(kind, []):
                    for rtype, named in _clean(block).items():
                        for rname, body in named.items():
                            assert (rtype, rname) not in target, f"{kind} {rtype}.{rname} declared twice"
                            target[(rtype, rname)] = body

    # -- evaluation -----------------------------------------------------------

    def evaluate(self, value: Any, each: tuple[Any, Any] | None = None) -> Any:
        if isinstance(value, dict):
            return {k: self.evaluate(v, each) for k, v in value.items()}
        if isinstance(value, list):
            return [self.evaluate(v, each) for v in value]
        if not isinstance(value, str):
            return value
        text = _unquote(value)
        whole = re.fullmatch(r"\$\{(.*)\}", text, re.S)
        if whole and "${" not in whole.group(1):
            return self.expression(whole.group(1).strip(), each)

        def substitute(match: re.Match[str]) -> str:
            result = self.expression(match.group(1).strip(), each)
            if isinstance(result, (dict, list, Ref)):
                raise AssertionError(f"cannot put {match.group(0)} into a string here")
            return str(result)

        return re.sub(r"\$\{([^{}]*)\}", substitute, text)

    def expression(self, expr: str, each: tuple[Any, Any] | None) -> Any:
        if expr.startswith('"') and expr.endswith('"'):
            return self.evaluate(expr, each)
        if re.fullmatch(r"-?\d+", expr):
            return int(expr)
        if expr in ("true", "false"):
            return expr == "true"
        call = re.fullmatch(r"jsonencode\(\{(.*)\}\)", expr, re.S)
        if call:
            return self._object(call.group(1), each)
        parts = expr.split(".")
        if parts[0] == "var":
            return self._walk(self.variables[parts[1]], parts[2:], expr)
        if parts[0] == "local":
            return self._walk(self.evaluate(self.raw_locals[parts[1]], each), parts[2:], expr)
        if parts[0] == "each":
            assert each is not None, f"{expr} outside a for_each"
            key, value = each
            if parts[1:] == ["key"]:
                return key
            assert parts[1] == "value", expr
            return self._walk(value, parts[2:], expr)
        ref = re.fullmatch(r"(data\.)?(\w+)\.(\w+)(?:\[([^\]]+)\])?\.(\w+)", expr)
        if ref:
            kind = "data" if ref.group(1) else "resource"
            key = self.expression(ref.group(4), each) if ref.group(4) else None
            return Ref(kind, ref.group(2), ref.group(3), key, ref.group(5))
        raise AssertionError(f"this test does not know how to evaluate {expr!r}; teach it, or simplify the .tf")

    @staticmethod
    def _walk(value: Any, path: list[str], expr: str) -> Any:
        for part in path:
            assert isinstance(value, dict) and part in value, f"{expr}: no {part!r}"
            value = value[part]
        return value

    def _object(self, body: str, each: tuple[Any, Any] | None) -> dict[str, Any]:
        result = {}
        for item in _split_top_level(body):
            key, _, value = item.partition("=")
            result[key.strip()] = self.expression(value.strip(), each)
        return result

    # -- instances ------------------------------------------------------------

    def instances(
        self, rtype: str, kind: str = "resource", only: str | None = None
    ) -> dict[tuple[str, Any], dict[str, Any]]:
        """Every instance of the ``rtype`` blocks (or only block ``only``), evaluated: ``{(name, key): attrs}``."""
        blocks = self.resources if kind == "resource" else self.data
        found = {}
        for (block_type, name), body in blocks.items():
            if block_type != rtype or (only is not None and name != only):
                continue
            for key, each in self._for_each(body):
                attributes = {k: v for k, v in body.items() if k not in ("for_each", "depends_on")}
                found[(name, key)] = self.evaluate(attributes, each)
        return found

    def _for_each(self, body: dict[str, Any]) -> list[tuple[Any, tuple[Any, Any] | None]]:
        if "for_each" not in body:
            return [(None, None)]
        collection = self.evaluate(body["for_each"])
        if isinstance(collection, dict):
            return [(k, (k, v)) for k, v in collection.items()]
        assert isinstance(collection, list), f"for_each over {collection!r}"
        return [(v, (v, v)) for v in collection]

    def attribute(self, ref: Ref) -> Any:
        """What a reference to another resource's ``name``/``arn``/``url``/``id`` stands for here: its name."""
        rtype_instances = self.instances(ref.type, ref.kind, only=ref.name)
        assert (ref.name, ref.key) in rtype_instances, f"reference to a missing {ref}"
        target = rtype_instances[(ref.name, ref.key)]
        if ref.type == "aws_sqs_queue" and ref.attr in ("arn", "url", "id", "name"):
            return target["name"]
        if ref.type == "aws_sns_topic" and ref.attr in ("arn", "id", "name"):
            return target["name"]
        if ref.type == "aws_s3_bucket" and ref.attr in ("arn", "id", "bucket"):
            return target["bucket"]
        if ref.kind == "data" and ref.attr == "json":
            return target
        raise AssertionError(f"this test does not follow {ref}")


def _split_top_level(text: str) -> list[str]:
    items, depth, start = [], 0, 0
    for index, char in enumerate(text):
        if char in "([{":
            depth += 1
        elif char in ")]}":
            depth -= 1
        elif char in ",\n" and depth == 0:
            items.append(text[start:index])
            start = index + 1
    items.append(text[start:])
    return [item.strip() for item in items if item.strip()]


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


# -- fixtures -----------------------------------------------------------------


@pytest.fixture(scope="module")
def tf() -> Terraform:
    return Terraform(INFRA_DIR)


@pytest.fixture(scope="module")
def settings() -> Settings:
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
        assert sub["endpoint"].attr == "arn" and sub["topic_arn"].attr == "arn"
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


def test_iam_policies_grant_what_each_process_uses(tf: Terraform) -> None:
    assert _actions(tf, "workers") == {
        "sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:ChangeMessageVisibility", "sqs:GetQueueUrl",
        "sqs:GetQueueAttributes", "sqs:SendMessage", "sqs:ListQueues",
        "sns:Publish", "sns:ListTopics",
        "s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:ListBucket", "s3:AbortMultipartUpload",
    } | MONITORING_ACTIONS
    assert _actions(tf, "beat") == {
        "sqs:SendMessage", "sqs:GetQueueUrl", "sqs:ListQueues", "sns:CreateTopic", "sns:Publish", "sns:TagResource",
    }
    assert _actions(tf, "flower") == {
        "sqs:GetQueueAttributes", "sqs:GetQueueUrl", "sqs:ListQueues",
    } | MONITORING_ACTIONS
    for document in ("workers", "beat", "flower"):
        body = tf.data[("aws_iam_policy_document", document)]
        for statement in _as_list(body["statement"]):
            resources = _unquoted_list(statement["resources"]) if isinstance(statement["resources"], list) else []
            if "*" in resources:
                # Only the actions that have no resource-level permissions get "*".
                assert set(_unquoted_list(statement["actions"])) <= {
                    "sqs:ListQueues", "sns:ListTopics", "sns:Unsubscribe"}, statement


def test_monitoring_grants_only_the_celery_topics_and_queues(tf: Terraform, settings: Settings) -> None:
    region = settings.aws.region
    topics = [f"arn:aws:sns:{region}:*:celeryev", f"arn:aws:sns:{region}:*:celery-pidbox"]
    queues = [f"arn:aws:sqs:{region}:*:celeryev-*", f"arn:aws:sqs:{region}:*:*-celery-pidbox"]
    for document in ("workers", "flower"):
        actions, resources = _actions_of(tf, document, "MonitoringQueues")
        assert actions == {a for a in MONITORING_ACTIONS if a.startswith("sqs:")}
        assert resources == queues
        actions, resources = _actions_of(tf, document, "MonitoringTopics")
        assert actions == {a for a in MONITORING_ACTIONS if a.startswith("sns:")} - {"sns:Unsubscribe"}
        assert resources == topics
        assert _actions_of(tf, document, "MonitoringUnsubscribe") == ({"sns:Unsubscribe"}, ["*"])
    # beat sends tasks, and so their task-sent events: only to the events topic.
    actions, resources = _actions_of(tf, "beat", "TaskSentEvents")
    assert actions == {"sns:CreateTopic", "sns:Publish", "sns:TagResource"} and resources == topics[:1]


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
