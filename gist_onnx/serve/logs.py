"""The server's logging: one line per request, a traceback for every failure, text or JSON.

uvicorn's own access log is off; its error log joins ours through the root logger.
"""

from __future__ import annotations

import json
import logging
import sys
import time

from gist_onnx.options import LOG_FORMATS, LOG_LEVELS

access = logging.getLogger("gist_onnx.serve.access")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, a request's fields, a traceback."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            **getattr(record, "request", {}),
        }
        if record.exc_info:
            entry["traceback"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def configure_logging(level: str = "info", fmt: str = "text") -> None:
    """Send every logger's records at ``level`` and above to stderr, formatted as ``fmt``."""
    if level not in LOG_LEVELS or fmt not in LOG_FORMATS:
        raise ValueError(f"log level must be one of {LOG_LEVELS} and format one of {LOG_FORMATS}")
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


def log_request(
    method: str, route: str, status: int, seconds: float, level: int = logging.INFO, **fields: float | None
) -> None:
    """The request's line: method, route, status, then its inputs, tokens and milliseconds."""
    known = {key: value for key, value in fields.items() if value is not None}
    request = {"method": method, "route": route, "status": status, "ms": round(seconds * 1e3, 2), **known}
    text = " ".join(f"{key}={value}" for key, value in known.items())
    access.log(
        level, "%s %s %d %.2fms %s", method, route, status, seconds * 1e3, text, extra={"request": request}
    )
