"""A small evaluator of the Terraform in ``infra/``, and an IAM policy simulator, for the tests.

The Terraform files are parsed with python-hcl2, and the few simple expressions
they use (``var.x``, ``local.x``, ``each.key``, ``each.value.x``, string
templates, ``jsonencode({...})``, ``[for q in TYPE.NAME : q.attr]`` and references
to other resources) are evaluated here, one instance per ``for_each`` key. Anything
else is an error, so that a change to the Terraform this evaluator does not
understand fails loudly rather than passing by accident.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

import hcl2  # python-hcl2, a dev dependency

SQS_DEFAULT_VISIBILITY_S = 30  # what AWS (and the aws provider) use when none is given
ACCOUNT = "123456789012"  # any account: the policies name none

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
            if isinstance(result, Ref):
                return self.arn(result) if result.attr == "arn" else str(self.attribute(result))
            if isinstance(result, (dict, list)):
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
        loop = re.fullmatch(r"\[for (\w+) in (\w+)\.(\w+) : \1\.(\w+)\]", expr)
        if loop:  # [for q in aws_sqs_queue.handler : q.arn]: one reference per instance
            _, rtype, rname, attr = loop.groups()
            return [Ref("resource", rtype, rname, key, attr) for (_, key) in self.instances(rtype, only=rname)]
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
            assert isinstance(value, dict), f"{expr}: no {part!r}"
            assert part in value, f"{expr}: no {part!r}"
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
        if ref.type in ("aws_iam_role", "aws_iam_policy", "aws_secretsmanager_secret") and ref.attr in (
                "arn", "id", "name"):
            return target["name"]
        if ref.kind == "data" and ref.attr == "json":
            return target
        raise AssertionError(f"this test does not follow {ref}")

    def arn(self, ref: Ref) -> str:
        """The ARN a reference's ``.arn`` stands for, in the variables' region and a made-up account."""
        name = self.attribute(ref)
        region = self.variables["region"]
        service = {"aws_sqs_queue": "sqs", "aws_sns_topic": "sns"}.get(ref.type)
        if service:
            return f"arn:aws:{service}:{region}:{ACCOUNT}:{name}"
        if ref.type == "aws_s3_bucket":
            return f"arn:aws:s3:::{name}"
        if ref.type in ("aws_iam_role", "aws_iam_policy"):
            return f"arn:aws:iam::{ACCOUNT}:{ref.type.removeprefix('aws_iam_')}/{name}"
        if ref.type == "aws_secretsmanager_secret":
            return f"arn:aws:secretsmanager:{region}:{ACCOUNT}:secret:{name}"
        raise AssertionError(f"this test does not know the ARN of {ref}")


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


# -- IAM, as AWS decides it ---------------------------------------------------


@dataclass(frozen=True)
class Statement:
    sid: str
    effect: str
    actions: frozenset[str]
    resources: tuple[str, ...] | None  # None: the statement names not_resources instead
    not_resources: tuple[str, ...] | None
    conditions: tuple[tuple[str, str, tuple[str, ...]], ...]  # (test, variable, values)

    def matches(self, action: str, resource: str, context: dict[str, str]) -> bool:
        if not any(fnmatchcase(action, pattern) for pattern in self.actions):
            return False
        if self.resources is not None and not any(fnmatchcase(resource, p) for p in self.resources):
            return False
        if self.not_resources is not None and any(fnmatchcase(resource, p) for p in self.not_resources):
            return False
        for test, variable, values in self.conditions:
            assert test == "StringLike", f"this simulator does not know the condition {test}"
            if variable not in context or not any(fnmatchcase(context[variable], v) for v in values):
                return False
        return True


def _resolved(tf: Terraform, value: Any) -> list[str]:
    """A statement's resources as ARNs: references become the ARN they stand for."""
    return [tf.arn(v) if isinstance(v, Ref) else _unquote(str(v)) for v in _as_list(value)]


def statements(tf: Terraform, document: str) -> list[Statement]:
    """The statements of ``data.aws_iam_policy_document.<document>``, evaluated."""
    ((_, body),) = tf.instances("aws_iam_policy_document", "data", only=document).items()
    found = []
    for raw in _as_list(body["statement"]):
        conditions = tuple(
            (c["test"], c["variable"], tuple(_as_list(c["values"]))) for c in _as_list(raw.get("condition", []))
        )
        found.append(Statement(
            sid=raw["sid"], effect=raw.get("effect", "Allow"), actions=frozenset(_as_list(raw["actions"])),
            resources=tuple(_resolved(tf, raw["resources"])) if "resources" in raw else None,
            not_resources=tuple(_resolved(tf, raw["not_resources"])) if "not_resources" in raw else None,
            conditions=conditions,
        ))
    return found


def _document_of(tf: Terraform, policy: Any) -> str:
    """The policy document a role policy (``data.….json``) or a managed policy's ``policy`` names."""
    assert isinstance(policy, Ref), policy
    if policy.kind == "data":
        assert policy.type == "aws_iam_policy_document", policy
        assert policy.attr == "json", policy
        return policy.name
    assert policy.type == "aws_iam_policy", policy
    assert policy.attr == "arn", policy
    ((_, managed),) = tf.instances("aws_iam_policy", only=policy.name).items()
    return _document_of(tf, managed["policy"])


def role_documents(tf: Terraform, role: str, key: Any = None) -> list[str]:
    """Every policy document that applies to ``aws_iam_role.<role>[key]``: inline and attached."""
    documents = []
    for attached in tf.instances("aws_iam_role_policy").values():
        target = attached["role"]
        if (target.name, target.key) == (role, key):
            documents.append(_document_of(tf, attached["policy"]))
    for attached in tf.instances("aws_iam_role_policy_attachment").values():
        target = attached["role"]
        if (target.name, target.key) == (role, key) and isinstance(attached["policy_arn"], Ref):
            documents.append(_document_of(tf, attached["policy_arn"]))
    return documents


def allowed(
    tf: Terraform, documents: list[str], action: str, resource: str, context: dict[str, str] | None = None
) -> bool:
    """AWS's rule: an explicit Deny anywhere wins; otherwise some Allow must match; otherwise denied."""
    every = [s for document in documents for s in statements(tf, document)]
    context = context or {}
    if any(s.effect == "Deny" and s.matches(action, resource, context) for s in every):
        return False
    return any(s.effect == "Allow" and s.matches(action, resource, context) for s in every)
