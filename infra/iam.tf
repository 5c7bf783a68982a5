# Least-privilege policies to attach to the roles that run each process.
# sqs:ListQueues and sns:ListTopics do not support resource-level permissions,
# so those two are granted on "*" and everything else on the exact resources.

locals {
  handler_queue_arns = [for q in aws_sqs_queue.handler : q.arn]
  topic_arns         = [for t in aws_sns_topic.this : t.arn]
}

# Celery workers: consume their queue, publish the next step of a chain
# (SendMessage), fan out Results and Events to SNS, and read and write the bucket.
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

# Celery beat: only sends scheduled tasks to the handler queues.
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
}

# Flower: looks at the handler queues, never changes them.
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
}

resource "aws_iam_policy" "workers" {
  name        = "${var.name_prefix}-workers"
  description = "Pudato Celery workers: handler queues, fan-out topics, storage bucket."
  policy      = data.aws_iam_policy_document.workers.json
}

resource "aws_iam_policy" "beat" {
  name        = "${var.name_prefix}-beat"
  description = "Pudato Celery beat: send to the handler queues."
  policy      = data.aws_iam_policy_document.beat.json
}

resource "aws_iam_policy" "flower" {
  name        = "${var.name_prefix}-flower"
  description = "Pudato Flower: read-only view of the handler queues."
  policy      = data.aws_iam_policy_document.flower.json
}
