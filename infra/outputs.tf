output "queue_urls" {
  description = "Handler queue URLs, by handler."
  value       = { for handler, q in aws_sqs_queue.handler : handler => q.url }
}

output "dead_letter_queue_urls" {
  description = "Dead-letter queue URLs, by handler."
  value       = { for handler, q in aws_sqs_queue.dlq : handler => q.url }
}

output "audit_queue_urls" {
  description = "Audit queue URLs, by topic (results, events)."
  value       = { for key, q in aws_sqs_queue.audit : key => q.url }
}

output "topic_arns" {
  description = "SNS topic ARNs, by topic (results, events)."
  value       = { for key, t in aws_sns_topic.this : key => t.arn }
}

output "bucket" {
  description = "Storage bucket name (PUDATO_STORAGE__BUCKET)."
  value       = aws_s3_bucket.storage.bucket
}

output "bucket_arn" {
  description = "Storage bucket ARN."
  value       = aws_s3_bucket.storage.arn
}

output "role_arns" {
  description = "IAM role ARNs: the task role of each handler's worker, of beat and of Flower, and the execution role."
  value = merge(
    { for handler, role in aws_iam_role.handler : handler => role.arn },
    { beat = aws_iam_role.beat.arn, flower = aws_iam_role.flower.arn, execution = aws_iam_role.execution.arn },
  )
}

output "secret_arns" {
  description = "Secrets Manager secrets to fill (put-secret-value) and hand to the tasks through the execution role."
  value = {
    registry_url      = aws_secretsmanager_secret.registry_url.arn
    lake_catalog      = aws_secretsmanager_secret.lake_catalog.arn
    flower_basic_auth = aws_secretsmanager_secret.flower_basic_auth.arn
  }
}

output "policy_arns" {
  description = "IAM policy ARNs: shared by every worker, beat, Flower, and the lake's maintenance."
  value = {
    worker_common = aws_iam_policy.worker_common.arn
    beat          = aws_iam_policy.beat.arn
    flower        = aws_iam_policy.flower.arn
    lake          = aws_iam_policy.lake.arn
  }
}
