"""An S3-compatible store on loopback for tests and tools: moto's
`moto_server` in a subprocess with one bucket, stopped by its pid.

delta-rs 1.x commits each Delta log entry with `PUT ... If-None-Match: *`
(object_store's conditional put, on by default), and moto answers 412 to
it when the key exists, so two writers cannot both win one version and no
extra storage option is needed (see docs/SCALE-OUT.md)."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

from ingest.testing.server_process import poll

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class MotoServer:
    """`moto_server -p PORT` on 127.0.0.1 with `bucket` created."""

    def __init__(self, bucket: str = "ingest-test", log_path: Path | None = None):
        self.bucket = bucket
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        executable = Path(sys.executable).with_name("moto_server")  # moto[server]'s console script, beside python
        self.log_path = log_path
        self._log = open(log_path or os.devnull, "w")
        self.proc = subprocess.Popen([str(executable), "-H", "127.0.0.1", "-p", str(self.port)],
                                     stdout=self._log, stderr=subprocess.STDOUT)
        try:
            poll(self._answers, timeout=60, interval=0.05, what=f"moto_server on {self.endpoint}")
            self.client().create_bucket(Bucket=bucket)
        except BaseException:
            self.stop()
            raise

    @property
    def env(self) -> dict:
        """What a process writing to this store needs in its environment (delta-rs and pyarrow read it)."""
        return dict(CREDENTIALS)

    def uri(self, prefix: str) -> str:
        return f"s3://{self.bucket}/{prefix}"

    def storage_options(self) -> dict:
        """deltalake's storage options for this store (what ingest's storage_options() makes of --delta-endpoint)."""
        return {"aws_endpoint_url": self.endpoint, "aws_allow_http": "true",
                **{k.lower(): v for k, v in CREDENTIALS.items()}}

    def client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
                            aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
                            region_name=CREDENTIALS["AWS_REGION"])

    def log(self) -> str:
        """What moto_server printed: one line per request, with its status."""
        if self.log_path is None:
            return ""
        self._log.flush()
        return self.log_path.read_text()

    def _answers(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"moto_server exited with {self.proc.returncode} before answering")
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                sock.sendall(b"GET /moto-api/ HTTP/1.0\r\nHost: localhost\r\n\r\n")
                return sock.recv(12).startswith(b"HTTP/1.")
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
