"""`gist-onnx serve` in a child process on a free loopback port: for tests and benchmarks that
call the server as its clients do, and for a user's own integration tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import IO


@dataclass
class ServerProcess:
    """A running server: its process, base URL and log (its stdout and stderr)."""

    process: subprocess.Popen
    port: int
    log: IO[str]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM (a graceful drain), then kill after ``timeout``; the exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
        return self.process.wait()

    def log_text(self) -> str:
        """Everything the server has logged so far."""
        # pread: the server writes through the same open file, so its offset must not move.
        fd = self.log.fileno()
        return os.pread(fd, os.fstat(fd).st_size, 0).decode("utf-8", errors="replace")

    def rss_mib(self) -> float:
        """The server's resident memory now (Linux)."""
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError("no VmRSS line")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(
    model_dir: Path, *args: str, env: dict[str, str] | None = None, ready_within: float = 120
) -> ServerProcess:
    """Start ``gist-onnx serve -m MODEL_DIR ARGS`` on 127.0.0.1 and wait until /health is 200."""
    port = free_port()
    command = [sys.executable, "-m", "gist_onnx", "serve", "-m", str(model_dir), "--port", str(port), *args]
    # A file, not a pipe: a pipe nobody reads would block the server once its buffer filled.
    log = tempfile.TemporaryFile("w+")
    process = subprocess.Popen(
        command, env={**os.environ, **(env or {})}, stdout=log, stderr=subprocess.STDOUT, text=True
    )
    server = ServerProcess(process, port, log)
    deadline = time.monotonic() + ready_within
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with {process.returncode}: {server.log_text()}")
        try:
            with urllib.request.urlopen(f"{server.url}/health", timeout=1) as response:
                if response.status == 200:
                    return server
        except OSError:  # refused while starting, or 503 while loading
            pass
        time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"the server was not ready within {ready_within} s")
