"""An S3-compatible server on loopback (moto's server mode), for the tests and the bulk benchmark.

Nothing leaves the machine: the server binds 127.0.0.1, and the credentials are moto's test ones.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}
Options = tuple[tuple[str, str], ...]


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def local_s3(log: Path) -> Iterator[Options]:
    """Start moto's server on a free loopback port; yield the storage options that reach it.

    The process's AWS variables are set to the test credentials meanwhile (worker processes
    inherit them), and restored after.
    """
    port = _free_port()
    with log.open("w") as sink:
        server = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=sink,
            stderr=sink,
        )
        saved = {key: os.environ.get(key) for key in CREDENTIALS}
        try:
            _wait_listening(port, server)
            os.environ.update(CREDENTIALS)
            yield (("endpoint_override", f"127.0.0.1:{port}"), ("scheme", "http"), ("region", "us-east-1"))
        finally:
            server.terminate()
            server.wait(30)
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value


def _wait_listening(port: int, server: subprocess.Popen, within: float = 60) -> None:
    deadline = time.monotonic() + within
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1).close()
            return
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("moto's server did not start") from None
            time.sleep(0.1)


def filesystem(options: Options, create_buckets: bool = True):
    """pyarrow's S3 filesystem on the server, with the test credentials (it may create buckets)."""
    import pyarrow.fs as pafs

    settings = dict(options)
    return pafs.S3FileSystem(
        endpoint_override=settings["endpoint_override"], scheme=settings.get("scheme", "http"),
        region=settings.get("region", "us-east-1"), access_key=CREDENTIALS["AWS_ACCESS_KEY_ID"],
        secret_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"], allow_bucket_creation=create_buckets,
    )  # fmt: skip
