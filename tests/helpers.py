"""What a user would check: the rows in a database, the objects in a bucket."""

from __future__ import annotations

import json
from typing import Any

from tests.services import Cluster, S3Server


def table_digest(cluster: Cluster, database: str) -> dict[str, tuple[int, str]]:
    """Every user table's row count and a digest of its rows, by schema.table."""
    tables = cluster.execute(
        "SELECT schemaname, tablename FROM pg_tables "
        "WHERE schemaname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1, 2",
        database,
    )
    digest = {}
    for schema, table in tables:
        name = f'"{schema}"."{table}"'
        count, md5 = cluster.execute(
            f"SELECT count(*), md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), '')) "
            f"FROM {name} t",
            database,
        )[0]
        digest[f"{schema}.{table}"] = (count, md5)
    return digest


def objects(s3: S3Server, bucket: str, prefix: str = "") -> list[str]:
    pages = s3.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return [item["Key"] for page in pages for item in page.get("Contents", [])]


def pending_uploads(s3: S3Server, bucket: str) -> list[str]:
    return [u["Key"] for u in s3.client().list_multipart_uploads(Bucket=bucket).get("Uploads", [])]


def get_object(s3: S3Server, bucket: str, key: str) -> bytes:
    body: bytes = s3.client().get_object(Bucket=bucket, Key=key)["Body"].read()
    return body


def put_object(s3: S3Server, bucket: str, key: str, data: bytes) -> None:
    s3.client().put_object(Bucket=bucket, Key=key, Body=data)


def flip_byte(data: bytes, at: int) -> bytes:
    """The same bytes with one bit of one byte changed: the smallest corruption there is."""
    return data[:at] + bytes([data[at] ^ 1]) + data[at + 1 :]


def loads(text: str) -> Any:
    return json.loads(text)
