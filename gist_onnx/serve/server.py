"""Running the service under uvicorn, with a graceful drain on SIGTERM or Ctrl-C.

On the first signal readiness turns 503 and new work is refused with 503, while every request
already accepted is answered; once nothing is queued or running (or ``shutdown_timeout`` has
passed) the server closes and the process exits 0. A second signal exits at once.
"""

from __future__ import annotations

import logging
import time
from types import FrameType

import uvicorn

from gist_onnx.serve.app import EmbeddingService, ServeConfig, create_app
from gist_onnx.serve.logs import configure_logging

log = logging.getLogger("gist_onnx.serve")


class _DrainingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, service: EmbeddingService, shutdown_timeout: float) -> None:
        super().__init__(config)
        self.service = service
        self.shutdown_timeout = shutdown_timeout
        self.drain_deadline: float | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self.drain_deadline is not None:  # a second signal: stop now
            self.should_exit = self.force_exit = True
            return
        log.info("draining: readiness is 503, new work is refused, accepted requests finish")
        self.service.batcher.drain()
        self.drain_deadline = time.monotonic() + self.shutdown_timeout

    async def on_tick(self, counter: int) -> bool:
        if self.service.batcher.load_error is not None:  # nothing to serve: exit, the caller says why
            self.should_exit = True
        if self.drain_deadline is not None:
            remaining = self.drain_deadline - time.monotonic()
            if self.service.idle() or remaining <= 0:
                # What is left of the budget bounds uvicorn's own wait for open connections.
                self.config.timeout_graceful_shutdown = max(0.1, remaining)
                self.should_exit = True
        return await super().on_tick(counter)


def serve(
    config: ServeConfig,
    host: str = "127.0.0.1",
    port: int = 8080,
    shutdown_timeout: float = 30.0,
    log_level: str = "info",
    log_format: str = "text",
) -> int:
    """Load the model, serve until SIGTERM or Ctrl-C, drain, and return the exit status."""
    configure_logging(log_level, log_format)
    service = EmbeddingService(config)
    service.start()  # the model loads on the worker thread while the server already answers /health
    uvicorn_config = uvicorn.Config(
        create_app(service), host=host, port=port, lifespan="off",
        access_log=False, log_config=None,  # our log line per request; uvicorn's errors reach our handler
    )  # fmt: skip
    server = _DrainingServer(uvicorn_config, service, shutdown_timeout)
    log.info("serving %s on http://%s:%d", config.model_dir, host, port)
    server.run()
    service.close()
    if service.batcher.load_error is not None:
        log.error("the model failed to load: %s", service.batcher.load_error)
        return 1
    return 0
