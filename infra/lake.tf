# The lake (PUDATO_WAREHOUSE__BACKEND=ducklake): Parquet files under lake_prefix in the
# bucket, and a catalog database on the registry's PostgreSQL server.
#
# The catalog database itself is created by `pudato infra up` (CREATE DATABASE if missing,
# then DuckLake's own tables); this file keeps its credentials and grants the table, query
# and transform workers what the lake needs, and nothing the other processes need.

# The catalog's password, set out of band (aws secretsmanager put-secret-value), handed to
# the workers as PUDATO_WAREHOUSE__CATALOG_PASSWORD by the task definition; never logged.
resource "aws_secretsmanager_secret" "lake_catalog" {
  name        = "${var.name_prefix}/lake-catalog"
  description = "Password of the PostgreSQL role that owns the lake's catalog database ${var.lake_catalog_database}."
}

data "aws_iam_policy_document" "lake" {
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

  # Write new data files, read them, and delete the ones whose snapshots were expired.
  statement {
    sid    = "LakeFiles"
    effect = "Allow"
    actions = [
      "s3:AbortMultipartUpload",
      "s3:DeleteObject",
      "s3:GetObject",
      "s3:PutObject",
    ]
    resources = ["${aws_s3_bucket.storage.arn}/${var.lake_prefix}*"]
  }

  statement {
    sid       = "CatalogPassword"
    effect    = "Allow"
    actions   = ["secretsmanager:GetSecretValue"]
    resources = [aws_secretsmanager_secret.lake_catalog.arn]
  }
}

resource "aws_iam_policy" "lake" {
  name        = "${var.name_prefix}-lake"
  description = "Pudato table, query and transform workers: the lake's data prefix and catalog password."
  policy      = data.aws_iam_policy_document.lake.json
}
