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

output "policy_arns" {
  description = "IAM policy ARNs to attach to the roles running each process."
  value = {
    workers = aws_iam_policy.workers.arn
    beat    = aws_iam_policy.beat.arn
    flower  = aws_iam_policy.flower.arn
    lake    = aws_iam_policy.lake.arn
  }
}
