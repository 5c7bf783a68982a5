# Least-privilege policies for the roles in roles.tf: what every worker shares, beat, Flower.
# sqs:ListQueues and sns:ListTopics do not support resource-level permissions,
# so those two are granted on "*" and everything else on the exact resources.

locals {
  handler_queue_arns = [for q in aws_sqs_queue.handler : q.arn]
  topic_arns         = [for t in aws_sns_topic.this : t.arn]

  # Celery monitoring (PUDATO_BROKER__MONITORING, on by default): kombu creates these topics on
  # first use, and each worker and monitor creates a queue of its own, deleted when it stops
  # (workers/transport.py); names as kombu gives them.
  # What a worker does with its own handler queue (roles.tf).
  consume_actions = [
    "sqs:ChangeMessageVisibility",
    "sqs:DeleteMessage",
    "sqs:GetQueueAttributes",
    "sqs:GetQueueUrl",
    "sqs:ReceiveMessage",
  ]

  monitoring_topic_arns = [
    "arn:aws:sns:${var.region}:*:celeryev",      # task events
    "arn:aws:sns:${var.region}:*:celery-pidbox", # remote-control commands
  ]
  monitoring_queue_arns = [
    "arn:aws:sqs:${var.region}:*:celeryev-*",      # a monitor's (Flower's) events
    "arn:aws:sqs:${var.region}:*:*-celery-pidbox", # a worker's mailbox, an inspecting client's replies
  ]
  # What a process does with its own monitoring queue, and with the expired ones it sweeps.
  monitoring_queue_actions = [
    "sqs:ChangeMessageVisibility",
    "sqs:CreateQueue",
    "sqs:DeleteMessage",
    "sqs:DeleteQueue",
    "sqs:GetQueueAttributes",
    "sqs:GetQueueUrl",
    "sqs:ListQueueTags",
    "sqs:ReceiveMessage",
    "sqs:SendMessage",
    "sqs:SetQueueAttributes",
    "sqs:TagQueue",
  ]
  # Subscribe its queue to a topic, publish, and sweep the subscriptions of stopped processes.
  monitoring_topic_actions = [
    "sns:CreateTopic",
    "sns:ListSubscriptionsByTopic",
    "sns:Publish",
    "sns:Subscribe",
    "sns:TagResource",
  ]
}

# What every handler's worker needs, whatever its handler (attached to each role in roles.tf):
# find queues and topics, fan out Results and Events to SNS, and, with monitoring, send task
# events and answer remote control through its own mailbox queue. Its own queue, the queues it
# sends to and the bucket are in its handler's policy (roles.tf).
data "aws_iam_policy_document" "worker_common" {
  statement {
    sid       = "FindQueues"
    effect    = "Allow"
    actions   = ["sqs:ListQueues"]
    resources = ["*"]
  }

  statement {
    sid       = "FanOut"
    effect    = "Allow"
    actions   = ["sns:Publish"]
    resources = local.topic_arns
  }

  statement {
    sid       = "FindTopics"
    effect    = "Allow"
    actions   = ["sns:ListTopics"]
    resources = ["*"]
  }

  statement {
    sid       = "MonitoringQueues"
    effect    = "Allow"
    actions   = local.monitoring_queue_actions
    resources = local.monitoring_queue_arns
  }

  statement {
    sid       = "MonitoringTopics"
    effect    = "Allow"
    actions   = local.monitoring_topic_actions
    resources = local.monitoring_topic_arns
  }

  statement {
    sid       = "MonitoringUnsubscribe"
    effect    = "Allow"
    actions   = ["sns:Unsubscribe"] # the request names only the subscription: not scoped by topic
    resources = ["*"]
  }
}

# Celery beat: only sends scheduled tasks to the handler queues (and, monitoring on, their task-sent events).
data "aws_iam_policy_document" "beat" {
  statement {
    sid    = "SendToHandlerQueues"
    effect = "Allow"
    actions = [
      "sqs:GetQueueUrl",
      "sqs:SendMessage",
    ]
    resources = local.handler_queue_arns
  }

  statement {
    sid       = "FindQueues"
    effect    = "Allow"
    actions   = ["sqs:ListQueues"]
    resources = ["*"]
  }

  statement {
    sid       = "TaskSentEvents"
    effect    = "Allow"
    actions   = ["sns:CreateTopic", "sns:Publish", "sns:TagResource"]
    resources = ["arn:aws:sns:${var.region}:*:celeryev"]
  }
}

# Flower: looks at the handler queues, never changes them; receives events and inspects workers.
data "aws_iam_policy_document" "flower" {
  statement {
    sid    = "InspectHandlerQueues"
    effect = "Allow"
    actions = [
      "sqs:GetQueueAttributes",
      "sqs:GetQueueUrl",
    ]
    resources = local.handler_queue_arns
  }

  statement {
    sid       = "FindQueues"
    effect    = "Allow"
    actions   = ["sqs:ListQueues"]
    resources = ["*"]
  }

  statement {
    sid       = "MonitoringQueues"
    effect    = "Allow"
    actions   = local.monitoring_queue_actions
    resources = local.monitoring_queue_arns
  }

  statement {
    sid       = "MonitoringTopics"
    effect    = "Allow"
    actions   = local.monitoring_topic_actions
    resources = local.monitoring_topic_arns
  }

  statement {
    sid       = "MonitoringUnsubscribe"
    effect    = "Allow"
    actions   = ["sns:Unsubscribe"] # the request names only the subscription: not scoped by topic
    resources = ["*"]
  }
}

resource "aws_iam_policy" "worker_common" {
  name        = "${var.name_prefix}-worker-common"
  description = "Pudato workers, every handler: fan-out topics, monitoring, finding queues and topics."
  policy      = data.aws_iam_policy_document.worker_common.json
}

resource "aws_iam_policy" "beat" {
  name        = "${var.name_prefix}-beat"
  description = "Pudato Celery beat: send to the handler queues, with task-sent events."
  policy      = data.aws_iam_policy_document.beat.json
}

resource "aws_iam_policy" "flower" {
  name        = "${var.name_prefix}-flower"
  description = "Pudato Flower: read-only view of the handler queues; task events and remote control."
  policy      = data.aws_iam_policy_document.flower.json
}
