locals {
  # 14 days, the SQS maximum: time to look at a poison message (DLQ_RETENTION_S in pudato/infra.py).
  dlq_retention_seconds = 1209600
}

# pudato-<handler>-dlq: where a message goes after max_receive_count failed receives.
resource "aws_sqs_queue" "dlq" {
  for_each = var.queues

  name                       = "${var.name_prefix}-${each.key}-dlq"
  visibility_timeout_seconds = each.value.visibility_timeout_s
  message_retention_seconds  = local.dlq_retention_seconds
}

# pudato-<handler>: the queue the handler's Celery worker consumes (-Q pudato-<handler>).
resource "aws_sqs_queue" "handler" {
  for_each = var.queues

  name                       = "${var.name_prefix}-${each.key}"
  visibility_timeout_seconds = each.value.visibility_timeout_s
  redrive_policy = jsonencode({
    deadLetterTargetArn = aws_sqs_queue.dlq[each.key].arn
    maxReceiveCount     = each.value.max_receive_count
  })
}
