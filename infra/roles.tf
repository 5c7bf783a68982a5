# One IAM role per handler's worker, each allowed only what that handler does; roles for
# beat and Flower; and the execution role that hands the secrets to the processes.
#
# Who may do what:
#
# | role       | its queue          | sends to                       | bucket                                                        |
# |------------|--------------------|--------------------------------|---------------------------------------------------------------|
# | storage    | consume            | every handler queue            | read, write, delete any object except under lake_prefix      |
# | table      | consume            | every handler queue            | read any object; read and write lake_prefix                  |
# | query      | consume            | every handler queue            | read any object; write results outside lake_prefix; read lake |
# | catalog    | consume            | every handler queue            | nothing                                                       |
# | transform  | consume            | its own queue only (retries)   | read and write lake_prefix only; never delete                |
#
# A step's worker sends the next step of a chain, and the last step of a chord's header sends
# its body, so a handler may send to the queues its steps are followed by. Transform runs the
# analysts' logic repository, so it is boxed in with explicit Deny statements that no other
# policy attached later can lift: no delete anywhere in the bucket, no object outside the lake,
# no message to another handler's queue. A pipeline step after a transform step is therefore
# refused on AWS; run it as a job of its own, or give transform that queue here, knowingly.
#
# Every worker also gets the shared policy `worker_common` (iam.tf): fan-out, monitoring and
# finding queues and topics. No role reads a secret: the execution role does, and the task
# definition hands each process its own as environment variables.

data "aws_iam_policy_document" "task_assume" {
  statement {
    sid     = "TaskAssume"
    effect  = "Allow"
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = [var.task_role_principal]
    }
  }
}

resource "aws_iam_role" "handler" {
  for_each = var.queues

  name               = "${var.name_prefix}-${each.key}"
  description        = "Pudato ${each.key} worker (celery -Q ${var.name_prefix}-${each.key}): see infra/roles.tf."
  assume_role_policy = data.aws_iam_policy_document.task_assume.json
}

resource "aws_iam_role_policy_attachment" "handler_common" {
  for_each = var.queues

  role       = aws_iam_role.handler[each.key].name
  policy_arn = aws_iam_policy.worker_common.arn
}

# -- storage: any object but the lake's; the next step anywhere -------------------------------

data "aws_iam_policy_document" "storage" {
  statement {
    sid       = "ConsumeOwnQueue"
    effect    = "Allow"
    actions   = local.consume_actions
    resources = [aws_sqs_queue.handler["storage"].arn]
  }

  statement {
    sid       = "SendNextStep"
    effect    = "Allow"
    actions   = ["sqs:SendMessage"]
    resources = local.handler_queue_arns
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
      "s3:GetObjectVersion",
      "s3:PutObject",
    ]
    resources = ["${aws_s3_bucket.storage.arn}/*"]
  }

  # The lake's files belong to its catalog: a storage put or delete there would corrupt a table.
  statement {
    sid       = "KeepOffTheLake"
    effect    = "Deny"
    actions   = ["s3:DeleteObject", "s3:DeleteObjectVersion", "s3:PutObject"]
    resources = ["${aws_s3_bucket.storage.arn}/${var.lake_prefix}*"]
  }
}

resource "aws_iam_role_policy" "storage" {
  name   = "${var.name_prefix}-storage"
  role   = aws_iam_role.handler["storage"].id
  policy = data.aws_iam_policy_document.storage.json
}

# -- table: reads what it loads, writes the lake ----------------------------------------------

data "aws_iam_policy_document" "table" {
  statement {
    sid       = "ConsumeOwnQueue"
    effect    = "Allow"
    actions   = local.consume_actions
    resources = [aws_sqs_queue.handler["table"].arn]
  }

  statement {
    sid       = "SendNextStep"
    effect    = "Allow"
    actions   = ["sqs:SendMessage"]
    resources = local.handler_queue_arns
  }

  statement {
    sid       = "ReadObjects"
    effect    = "Allow"
    actions   = ["s3:GetObject", "s3:GetObjectVersion"]
    resources = ["${aws_s3_bucket.storage.arn}/*"]
  }

  statement {
    sid       = "ListLake"
    effect    = "Allow"
    actions   = ["s3:ListBucket"]
    resources = [aws_s3_bucket.storage.arn]

    condition {
      test     = "StringLike"
      variable = "s3:prefix"
      values   = ["${var.lake_prefix}*"]
    }
  }

  # DeleteObject: DuckLake removes the files of a transaction it rolled back (a write conflict).
  statement {
    sid       = "WriteLake"
    effect    = "Allow"
    actions   = ["s3:AbortMultipartUpload", "s3:DeleteObject", "s3:PutObject"]
    resources = ["${aws_s3_bucket.storage.arn}/${var.lake_prefix}*"]
  }
}

resource "aws_iam_role_policy" "table" {
  name   = "${var.name_prefix}-table"
  role   = aws_iam_role.handler["table"].id
  policy = data.aws_iam_policy_document.table.json
}

# -- query: reads anything, writes results outside the lake -----------------------------------

data "aws_iam_policy_document" "query" {
  statement {
    sid       = "ConsumeOwnQueue"
    effect    = "Allow"
    actions   = local.consume_actions
    resources = [aws_sqs_queue.handler["query"].arn]
  }

  statement {
    sid       = "SendNextStep"
    effect    = "Allow"
    actions   = ["sqs:SendMessage"]
    resources = local.handler_queue_arns
  }

  statement {
    sid       = "ReadObjects"
    effect    = "Allow"
    actions   = ["s3:GetObject", "s3:GetObjectVersion"]
    resources = ["${aws_s3_bucket.storage.arn}/*"]
  }

  statement {
    sid       = "ListLake"
    effect    = "Allow"
    actions   = ["s3:ListBucket"]
    resources = [aws_s3_bucket.storage.arn]

    condition {
      test     = "StringLike"
      variable = "s3:prefix"
      values   = ["${var.lake_prefix}*"]
    }
  }

  # A query's result written to storage (payload `output`); never over the lake's files.
  statement {
    sid       = "WriteResults"
    effect    = "Allow"
    actions   = ["s3:AbortMultipartUpload", "s3:PutObject"]
    resources = ["${aws_s3_bucket.storage.arn}/*"]
  }

  statement {
    sid       = "KeepOffTheLake"
    effect    = "Deny"
    actions   = ["s3:DeleteObject", "s3:DeleteObjectVersion", "s3:PutObject"]
    resources = ["${aws_s3_bucket.storage.arn}/${var.lake_prefix}*"]
  }
}

resource "aws_iam_role_policy" "query" {
  name   = "${var.name_prefix}-query"
  role   = aws_iam_role.handler["query"].id
  policy = data.aws_iam_policy_document.query.json
}

# -- catalog: the registry only (PostgreSQL), no bucket ---------------------------------------

data "aws_iam_policy_document" "catalog" {
  statement {
    sid       = "ConsumeOwnQueue"
    effect    = "Allow"
    actions   = local.consume_actions
    resources = [aws_sqs_queue.handler["catalog"].arn]
  }

  statement {
    sid       = "SendNextStep"
    effect    = "Allow"
    actions   = ["sqs:SendMessage"]
    resources = local.handler_queue_arns
  }
}

resource "aws_iam_role_policy" "catalog" {
  name   = "${var.name_prefix}-catalog"
  role   = aws_iam_role.handler["catalog"].id
  policy = data.aws_iam_policy_document.catalog.json
}

# -- transform: the lake's prefix, no delete, its own queue -----------------------------------

data "aws_iam_policy_document" "transform" {
  statement {
    sid       = "ConsumeOwnQueue"
    effect    = "Allow"
    actions   = local.consume_actions
    resources = [aws_sqs_queue.handler["transform"].arn]
  }

  # Only a retry of its own step (Celery sends it again to the same queue).
  statement {
    sid       = "SendRetry"
    effect    = "Allow"
    actions   = ["sqs:SendMessage"]
    resources = [aws_sqs_queue.handler["transform"].arn]
  }

  statement {
    sid       = "ListLake"
    effect    = "Allow"
    actions   = ["s3:ListBucket"]
    resources = [aws_s3_bucket.storage.arn]

    condition {
      test     = "StringLike"
      variable = "s3:prefix"
      values   = ["${var.lake_prefix}*"]
    }
  }

  # No DeleteObject: a rolled-back dbt transaction leaves its new files behind, as orphans for
  # the lake's maintenance (the `lake` policy, lake.tf) to remove.
  statement {
    sid       = "ReadWriteLake"
    effect    = "Allow"
    actions   = ["s3:AbortMultipartUpload", "s3:GetObject", "s3:PutObject"]
    resources = ["${aws_s3_bucket.storage.arn}/${var.lake_prefix}*"]
  }

  statement {
    sid       = "NeverDelete"
    effect    = "Deny"
    actions   = ["s3:DeleteBucket", "s3:DeleteObject", "s3:DeleteObjectVersion", "s3:PutLifecycleConfiguration"]
    resources = [aws_s3_bucket.storage.arn, "${aws_s3_bucket.storage.arn}/*"]
  }

  statement {
    sid           = "NoObjectOutsideTheLake"
    effect        = "Deny"
    actions       = ["s3:GetObject", "s3:GetObjectVersion", "s3:PutObject"]
    not_resources = ["${aws_s3_bucket.storage.arn}/${var.lake_prefix}*"]
  }

  # Its own queue, and the monitoring queues a worker answers remote control through.
  statement {
    sid           = "NoOtherQueue"
    effect        = "Deny"
    actions       = ["sqs:SendMessage"]
    not_resources = [aws_sqs_queue.handler["transform"].arn, "arn:aws:sqs:${var.region}:*:celeryev-*", "arn:aws:sqs:${var.region}:*:*-celery-pidbox"]
  }
}

resource "aws_iam_role_policy" "transform" {
  name   = "${var.name_prefix}-transform"
  role   = aws_iam_role.handler["transform"].id
  policy = data.aws_iam_policy_document.transform.json
}

# -- beat and Flower --------------------------------------------------------------------------

resource "aws_iam_role" "beat" {
  name               = "${var.name_prefix}-beat"
  description        = "Pudato Celery beat: sends scheduled jobs."
  assume_role_policy = data.aws_iam_policy_document.task_assume.json
}

resource "aws_iam_role_policy_attachment" "beat" {
  role       = aws_iam_role.beat.name
  policy_arn = aws_iam_policy.beat.arn
}

resource "aws_iam_role" "flower" {
  name               = "${var.name_prefix}-flower"
  description        = "Pudato Flower: watches the workers; never changes a handler queue."
  assume_role_policy = data.aws_iam_policy_document.task_assume.json
}

resource "aws_iam_role_policy_attachment" "flower" {
  role       = aws_iam_role.flower.name
  policy_arn = aws_iam_policy.flower.arn
}

# -- secrets: read by the execution role only ------------------------------------------------

# The registry's URL with its password (PUDATO_REGISTRY__URL) and Flower's login
# (PUDATO_FLOWER__BASIC_AUTH), set out of band (aws secretsmanager put-secret-value).
resource "aws_secretsmanager_secret" "registry_url" {
  name        = "${var.name_prefix}/registry-url"
  description = "PUDATO_REGISTRY__URL, with the registry role's password."
}

resource "aws_secretsmanager_secret" "flower_basic_auth" {
  name        = "${var.name_prefix}/flower-basic-auth"
  description = "PUDATO_FLOWER__BASIC_AUTH: user:password for Flower."
}

data "aws_iam_policy_document" "execution_secrets" {
  statement {
    sid     = "HandSecretsToTasks"
    effect  = "Allow"
    actions = ["secretsmanager:GetSecretValue"]
    resources = [
      aws_secretsmanager_secret.registry_url.arn,
      aws_secretsmanager_secret.lake_catalog.arn,
      aws_secretsmanager_secret.flower_basic_auth.arn,
    ]
  }
}

resource "aws_iam_role" "execution" {
  name               = "${var.name_prefix}-execution"
  description        = "Pudato task execution: pulls the image, writes logs, hands each task its secrets."
  assume_role_policy = data.aws_iam_policy_document.task_assume.json
}

resource "aws_iam_role_policy" "execution_secrets" {
  name   = "${var.name_prefix}-execution-secrets"
  role   = aws_iam_role.execution.id
  policy = data.aws_iam_policy_document.execution_secrets.json
}

resource "aws_iam_role_policy_attachment" "execution" {
  role       = aws_iam_role.execution.name
  policy_arn = "arn:aws:iam::aws:policy/service-role/AmazonECSTaskExecutionRolePolicy"
}
