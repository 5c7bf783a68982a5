locals {
  topics = {
    results = var.results_topic
    events  = var.events_topic
  }
}

# Fan-out of Results and Events (pudato/fanout.py publishes; subscribers filter on attributes).
resource "aws_sns_topic" "this" {
  for_each = local.topics

  name = each.value
}

# <topic>-audit: a queue that keeps a copy of everything published, for inspection.
resource "aws_sqs_queue" "audit" {
  for_each = local.topics

  name                       = "${each.value}-audit"
  visibility_timeout_seconds = 30
  message_retention_seconds  = local.dlq_retention_seconds
}

# SNS may deliver to the audit queue only from its own topic.
data "aws_iam_policy_document" "audit_delivery" {
  for_each = local.topics

  statement {
    sid       = "topic-delivery"
    effect    = "Allow"
    actions   = ["sqs:SendMessage"]
    resources = [aws_sqs_queue.audit[each.key].arn]

    principals {
      type        = "Service"
      identifiers = ["sns.amazonaws.com"]
    }

    condition {
      test     = "ArnEquals"
      variable = "aws:SourceArn"
      values   = [aws_sns_topic.this[each.key].arn]
    }
  }
}

resource "aws_sqs_queue_policy" "audit" {
  for_each = local.topics

  queue_url = aws_sqs_queue.audit[each.key].id
  policy    = data.aws_iam_policy_document.audit_delivery[each.key].json
}

resource "aws_sns_topic_subscription" "audit" {
  for_each = local.topics

  topic_arn            = aws_sns_topic.this[each.key].arn
  protocol             = "sqs"
  endpoint             = aws_sqs_queue.audit[each.key].arn
  raw_message_delivery = true

  depends_on = [aws_sqs_queue_policy.audit]
}
