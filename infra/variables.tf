# Defaults mirror pudato/settings.py, so that these resources are the ones
# `pudato infra up` creates and the workers expect. tests/unit/test_infra_terraform.py
# fails when the two disagree.

variable "region" {
  description = "AWS region (PUDATO_AWS__REGION)."
  type        = string
  default     = "us-east-1"
}

variable "name_prefix" {
  description = "Queue name prefix. The workers use \"pudato\" (QUEUE_PREFIX in pudato/settings.py); change it only together with that."
  type        = string
  default     = "pudato"
}

variable "bucket_name" {
  description = "Storage bucket (PUDATO_STORAGE__BUCKET). Bucket names are global: on real AWS you will likely need your own."
  type        = string
  default     = "pudato"
}

variable "queues" {
  description = "One SQS queue (and dead-letter queue) per handler, as in _default_queues() in pudato/settings.py. Visibility must outlast the queue's longest task."
  type = map(object({
    visibility_timeout_s = number
    max_receive_count    = number
  }))
  default = {
    storage = {
      visibility_timeout_s = 300
      max_receive_count    = 5
    }
    query = {
      visibility_timeout_s = 900
      max_receive_count    = 5
    }
    table = {
      visibility_timeout_s = 900
      max_receive_count    = 5
    }
    catalog = {
      visibility_timeout_s = 120
      max_receive_count    = 5
    }
    transform = {
      visibility_timeout_s = 3600
      max_receive_count    = 5
    }
  }
}

variable "results_topic" {
  description = "SNS topic for Results (PUDATO_FANOUT__RESULTS_TOPIC)."
  type        = string
  default     = "pudato-results"
}

variable "events_topic" {
  description = "SNS topic for Events (PUDATO_FANOUT__EVENTS_TOPIC)."
  type        = string
  default     = "pudato-events"
}

variable "tags" {
  description = "Tags applied to every resource through the provider's default_tags."
  type        = map(string)
  default = {
    Project = "pudato"
  }
}

variable "version_retention_days" {
  description = "Days an overwritten object's old version is kept (PUDATO_STORAGE__VERSION_RETENTION_DAYS): how far back an exact rerun reaches."
  type        = number
  default     = 90
}

variable "lake_prefix" {
  description = "Prefix of the lake's Parquet files in the bucket (PUDATO_WAREHOUSE__DATA_PATH is s3://<bucket>/<lake_prefix>)."
  type        = string
  default     = "lake/"
}

variable "lake_catalog_database" {
  description = "The lake's catalog database on the registry's PostgreSQL server (PUDATO_WAREHOUSE__CATALOG_DATABASE)."
  type        = string
  default     = "pudato_lake"
}

variable "task_role_principal" {
  description = "The service that assumes the task roles (roles.tf): ECS tasks by default; e.g. ec2.amazonaws.com for instances."
  type        = string
  default     = "ecs-tasks.amazonaws.com"
}
