"""Load generators for the serving benchmark: raw HTTP/1.1 over asyncio streams with keep-alive,
so the client costs the 2-core machine little. Every connection goes to 127.0.0.1, and every loop
is bounded in count or time.
"""

from __future__ import annotations

import asyncio
import base64
import json
import random
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

# Open-loop sockets at most: twice the server's queue, so at 200% its admission control, not the
# client, refuses the excess; bounded, so a tiny model's thousands of arrivals a second do not
# overflow the kernel's accept queue and count as dropped connections.
OPEN_LOOP_CONNECTIONS = 1024


def request_bytes(texts: str | list[str], encoding: str = "float") -> bytes:
    """An OpenAI embeddings request for ``texts``, ready to send on a keep-alive connection."""
    body = json.dumps({"input": texts, "encoding_format": encoding}).encode()
    head = (
        "POST /v1/embeddings HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> int:
    """Send one request on a keep-alive connection and read the whole response; its status."""
    return (await exchange_body(reader, writer, request))[0]


async def exchange_body(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes
) -> tuple[int, bytes]:
    """Send one request on a keep-alive connection; its status and body."""
    writer.write(request)
    status_line = await reader.readline()
    if not status_line:
        raise ConnectionResetError("the server closed the connection")
    length = 0
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode().partition(":")
        if name.lower() == "content-length":
            length = int(value)
    body = await reader.readexactly(length)
    return int(status_line.split()[1]), body


@dataclass
class LoadResult:
    seconds: float
    latencies: dict[int, list[float]]  # status → seconds of each response
    errors: int  # connections refused, reset or closed mid-response
    steady_texts_per_s: float | None = None  # a closed loop's rate once every client is answered

    def summary(self) -> dict[str, Any]:
        ok = np.array(self.latencies.get(200, [])) * 1e3
        rejected = np.array(self.latencies.get(429, [])) * 1e3
        pct = lambda a, q: float(np.percentile(a, q)) if len(a) else None  # noqa: E731
        return {
            "seconds": self.seconds,
            "texts_per_s": self.steady_texts_per_s or len(ok) / self.seconds,
            "p50_ms": pct(ok, 50), "p95_ms": pct(ok, 95), "p99_ms": pct(ok, 99),
            "statuses": {str(k): len(v) for k, v in sorted(self.latencies.items())},
            "errors": self.errors,
            "rejected_p99_ms": pct(rejected, 99),
        }  # fmt: skip


def merged(results: Sequence[LoadResult]) -> LoadResult:
    """Loads run in blocks, as one: their seconds, latencies and errors added up."""
    total = LoadResult(sum(r.seconds for r in results), {}, sum(r.errors for r in results))
    for result in results:
        for status, values in result.latencies.items():
            total.latencies.setdefault(status, []).extend(values)
    return total


async def closed_loop(port: int, clients: int, texts: list[str], seconds: float) -> LoadResult:
    """``clients`` connections, each sending its next text as soon as the last is answered.

    Its throughput counts the answers between the moment every client has had one (the first
    wave, which all arrives at once, is over) and the end (the last answers trickle in with
    fewer clients waiting): the steady state, whatever the loop's length.
    """
    latencies: dict[int, list[float]] = {}
    errors = 0
    stop = time.perf_counter() + seconds
    first_answers: list[float] = []
    answered_at: list[float] = []

    async def client(index: int) -> None:
        nonlocal errors
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        sent = index
        while time.perf_counter() < stop:
            started = time.perf_counter()
            try:
                status = await exchange(reader, writer, request_bytes(texts[sent % len(texts)]))
            except (OSError, asyncio.IncompleteReadError, ValueError):
                errors += 1
                return
            now = time.perf_counter()
            latencies.setdefault(status, []).append(now - started)
            if status == 200:
                answered_at.append(now)
            if sent == index:
                first_answers.append(now)
            sent += clients
        writer.close()

    began = time.perf_counter()
    await asyncio.gather(*(client(i) for i in range(clients)))
    result = LoadResult(time.perf_counter() - began, latencies, errors)
    steady_from = max(first_answers, default=stop)
    if len(first_answers) == clients and steady_from < stop:
        result.steady_texts_per_s = sum(steady_from < t <= stop for t in answered_at) / (stop - steady_from)
    return result


async def poisson_arrivals(
    rate: float, seconds: float, arrival: Callable[[int], Awaitable[int | None]], seed: int = 0
) -> LoadResult:
    """Start ``arrival(index)`` at Poisson times, ``rate`` a second for ``seconds``, whatever the
    pace of what serves them; each returns a status, or None for a dropped connection. A seed
    gives the same arrival times to every server measured with it."""
    latencies: dict[int, list[float]] = {}
    errors = 0
    rng = random.Random(seed)

    async def timed_arrival(index: int) -> None:
        nonlocal errors
        started = time.perf_counter()
        status = await arrival(index)
        if status is None:
            errors += 1
        else:
            latencies.setdefault(status, []).append(time.perf_counter() - started)

    began = time.perf_counter()
    tasks, index, due = [], 0, began
    while due < began + seconds:
        await asyncio.sleep(max(0.0, due - time.perf_counter()))
        tasks.append(asyncio.ensure_future(timed_arrival(index)))
        index += 1
        due += rng.expovariate(rate)
    await asyncio.gather(*tasks)
    return LoadResult(time.perf_counter() - began, latencies, errors)


async def open_loop(port: int, rate: float, texts: list[str], seconds: float, seed: int = 0) -> LoadResult:
    """The server under Poisson arrivals. Each arrival takes a free keep-alive connection or opens
    one, up to ``OPEN_LOOP_CONNECTIONS``; beyond that it waits for one, as a client's connection
    pool does, and the wait counts in its latency (timed from its arrival)."""
    idle: list[Connection] = []
    connections = asyncio.Semaphore(OPEN_LOOP_CONNECTIONS)

    async def arrival(index: int) -> int | None:
        request = request_bytes(texts[index % len(texts)])
        async with connections:
            connection = idle.pop() if idle else Connection(port)
            try:
                status, _ = await connection.send(request)
            except (OSError, asyncio.IncompleteReadError, ValueError):
                connection.close()
                return None
            idle.append(connection)
            return status

    result = await poisson_arrivals(rate, seconds, arrival, seed)
    for connection in idle:
        connection.close()
    return result


class Connection:
    """A keep-alive connection to the server, reopened when the server closed it while idle."""

    def __init__(self, port: int) -> None:
        self.port = port
        self._streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def send(self, request: bytes) -> tuple[int, bytes]:
        """Status and body; OSError or IncompleteReadError if even a fresh connection fails."""
        if self._streams is not None:
            try:
                return await exchange_body(*self._streams, request)
            except (ConnectionResetError, asyncio.IncompleteReadError):
                self.close()  # the server's keep-alive timeout ended it: open another
        self._streams = await asyncio.open_connection("127.0.0.1", self.port)
        return await exchange_body(*self._streams, request)

    def close(self) -> None:
        if self._streams is not None:
            self._streams[1].close()
            self._streams = None


def vectors_of(body: bytes) -> list[np.ndarray]:
    """The float32 vectors of a base64 OpenAI response, exactly as sent."""
    return [np.frombuffer(base64.b64decode(d["embedding"]), dtype="<f4") for d in json.loads(body)["data"]]


async def closed_loop_over(
    port: int, clients: int, requests: Iterator[str], keep: Callable[[str, np.ndarray], None]
) -> LoadResult:
    """``clients`` connections taking the next text of ``requests`` as soon as their last is
    answered, until it runs out; ``keep(text, vector)`` sees every answer (base64, exact)."""
    latencies: dict[int, list[float]] = {}
    errors = 0

    async def client() -> None:
        nonlocal errors
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for text in requests:  # one iterator shared by every client: each text is sent once
            started = time.perf_counter()
            try:
                status, body = await exchange_body(reader, writer, request_bytes(text, "base64"))
            except (OSError, asyncio.IncompleteReadError, ValueError):
                errors += 1
                return
            latencies.setdefault(status, []).append(time.perf_counter() - started)
            if status == 200:
                keep(text, vectors_of(body)[0])
        writer.close()

    began = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    return LoadResult(time.perf_counter() - began, latencies, errors)


async def paced_clients(
    port: int, clients: int, texts: list[str], mean_think_s: float, until: Callable[[], bool], seed: int = 1
) -> LoadResult:
    """``clients`` connections, each sending one text, then waiting an exponential think time of
    mean ``mean_think_s`` before the next, until ``until()`` says stop."""
    latencies: dict[int, list[float]] = {}
    errors = 0
    rng = random.Random(seed)

    async def client(index: int) -> None:
        nonlocal errors
        connection = Connection(port)
        sent = index
        await asyncio.sleep(rng.expovariate(1 / mean_think_s))
        while not until():
            started = time.perf_counter()
            try:
                status, _ = await connection.send(request_bytes(texts[sent % len(texts)]))
            except (OSError, asyncio.IncompleteReadError, ValueError):
                errors += 1
                return
            latencies.setdefault(status, []).append(time.perf_counter() - started)
            sent += clients
            await asyncio.sleep(rng.expovariate(1 / mean_think_s))
        connection.close()

    began = time.perf_counter()
    await asyncio.gather(*(client(i) for i in range(clients)))
    return LoadResult(time.perf_counter() - began, latencies, errors)


def percentile_ms(seconds: list[float], q: float) -> float | None:
    return float(np.percentile(np.array(seconds) * 1e3, q)) if seconds else None
