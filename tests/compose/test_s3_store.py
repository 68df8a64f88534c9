"""The property the local broker's durability rests on, checked on the store we ship.

Tansu claims each offset with conditional writes: `PUT` with `If-None-Match: *` must fail
(412) when the object exists, and `PUT` with a stale `If-Match` must fail too. The store used
before accepted both, so every broker restart numbered partitions from 0 again and
overwrote older records. Never trust the store's word for it: this test asks it.
"""

from __future__ import annotations

from typing import Any

import boto3
import pytest
from botocore.client import Config
from botocore.exceptions import ClientError
from conftest import Services

from compose.stack import S3_BUCKET


@pytest.fixture
def s3(services: Services) -> Any:
    if services.s3_endpoint is None or services.s3_credentials is None:
        # Only with TRACKER_KAFKA_BOOTSTRAP set: a real broker, no local store to check.
        pytest.skip("the test session uses an external broker")
    return boto3.client(
        "s3",
        endpoint_url=services.s3_endpoint,
        aws_access_key_id=services.s3_credentials["key"],
        aws_secret_access_key=services.s3_credentials["secret"],
        region_name="us-east-1",
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
    )


def status_of(error: ClientError) -> int:
    return int(error.response["ResponseMetadata"]["HTTPStatusCode"])


def test_create_only_put_of_an_existing_key_is_refused(s3: Any, isolation: str) -> None:
    key = f"{isolation}/offset-0"
    s3.put_object(Bucket=S3_BUCKET, Key=key, Body=b"first", IfNoneMatch="*")
    with pytest.raises(ClientError) as refused:
        s3.put_object(Bucket=S3_BUCKET, Key=key, Body=b"second", IfNoneMatch="*")
    assert status_of(refused.value) == 412
    body = s3.get_object(Bucket=S3_BUCKET, Key=key)["Body"].read()
    assert body == b"first"


def test_put_with_a_stale_etag_is_refused(s3: Any, isolation: str) -> None:
    key = f"{isolation}/watermark"
    first = s3.put_object(Bucket=S3_BUCKET, Key=key, Body=b"v1")
    second = s3.put_object(Bucket=S3_BUCKET, Key=key, Body=b"v2", IfMatch=first["ETag"])
    with pytest.raises(ClientError) as refused:
        s3.put_object(Bucket=S3_BUCKET, Key=key, Body=b"v3", IfMatch=first["ETag"])
    assert status_of(refused.value) == 412
    body = s3.get_object(Bucket=S3_BUCKET, Key=key)["Body"].read()
    assert body == b"v2"
    assert second["ETag"] != first["ETag"]
