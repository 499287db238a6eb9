"""moto's standalone S3 server on loopback, with csvjobs' buckets under a prefix of its own."""

from __future__ import annotations

import logging
import time
import uuid

import boto3
from moto.server import ThreadedMotoServer

BUCKETS = ("csv-uploads", "csv-templates", "csv-images")
logging.getLogger("werkzeug").setLevel(logging.ERROR)


class S3:
    def __init__(self) -> None:
        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self.server.start()
        host, self.port = self.server.get_host_and_port()
        self.url = f"http://{host}:{self.port}"
        self.prefix = f"t{uuid.uuid4().hex[:8]}-"
        self.client = boto3.client("s3", endpoint_url=self.url, aws_access_key_id="testing",
                                   aws_secret_access_key="testing", region_name="us-east-1")

    def create_buckets(self) -> None:
        for bucket in BUCKETS:
            self.client.create_bucket(Bucket=self.prefix + bucket)

    def keys(self, bucket: str) -> list[str]:
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.prefix + bucket)
        return [item["Key"] for page in pages for item in page.get("Contents", [])]

    def restart_after(self, seconds: float) -> None:
        self.server.stop()
        time.sleep(seconds)
        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self.server.start()
