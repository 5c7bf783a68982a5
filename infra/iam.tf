# Least-privilege policies to attach to the roles that run each process.
# sqs:ListQueues and sns:ListTopics do not support resource-level permissions,
# so those two are granted on "*" and everything else on the exact resources.

locals {
  handler_queue_arns = [for q in aws_sqs_queue.handler : q.arn]
  topic_arns         = [for t in aws_sns_topic.this : t.arn]

  # Celery monitoring (PUDATO_BROKER__MONITORING, on by default): kombu creates these topics on
  # first use, and each worker and monitor creates a queue of its own, deleted when it stops
  # (workers/transport.py); names as kombu gives them.
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

# Celery workers: consume their queue, publish the next step of a chain
# (SendMessage), fan out Results and Events to SNS, and read and write the bucket;
# with monitoring, send task events and answer remote control through their own mailbox queue.
data "aws_iam_policy_document" "workers" {
  statement {
    sid    = "HandlerQueues"
    effect = "Allow"
    actions = [
      "sqs:ChangeMessageVisibility",
      "sqs:DeleteMessage",
      "sqs:GetQueueAttributes",
      "sqs:GetQueueUrl",
      "sqs:ReceiveMessage",
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

  statement {
    sid       = "ListBucket"
    effect    = "Allow"
    actions   = ["s3:ListBucket"]
    resources = [aws_s3_bucket.storage.arn]
  }

  statement {
    sid    = "Objects"
    effect = "Allow"
    actions = [
      "s3:AbortMultipartUpload",
      "s3:DeleteObject",
      "s3:GetObject",
      "s3:PutObject",
    ]
    resources = ["${aws_s3_bucket.storage.arn}/*"]
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

resource "aws_iam_policy" "workers" {
  name        = "${var.name_prefix}-workers"
  description = "Pudato Celery workers: handler queues, fan-out topics, storage bucket, monitoring."
  policy      = data.aws_iam_policy_document.workers.json
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
