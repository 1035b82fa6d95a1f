"""The load generator of the API benchmark, run as its own process so its work is not the service's.

``python -m moderator.bench.http_load`` reads a ``LoadSpec`` (JSON) on stdin and prints a
``LoadResult`` (JSON): ``clients`` closed-loop HTTP clients (each sends its next request when the
last was answered, over one keep-alive connection) for ``seconds``, and beside them a producer
putting ``stream_rate`` unique posts per second on the posts topic. The HTTP client is a few lines
of asyncio on raw sockets, so 200 clients cost the generator little CPU and the latencies are the
server's.
"""

from __future__ import annotations

import asyncio
import sys
import time

import orjson
from aiokafka import AIOKafkaProducer
from pydantic import BaseModel


class LoadSpec(BaseModel):
    """What to send."""

    host: str
    port: int
    key: str
    clients: int
    seconds: float
    prefix: str
    kafka_bootstrap: str
    input_topic: str
    stream_rate: float


class LoadResult(BaseModel):
    """What happened: HTTP latencies (ms) and statuses, and each stream post's produce time (ms)."""

    latencies_ms: list[float]
    statuses: dict[str, int]
    elapsed_s: float
    produced: dict[str, int]


def _request(spec: LoadSpec, text: str) -> bytes:
    body = orjson.dumps({"input": text})
    return (f"POST /v1/moderations HTTP/1.1\r\nHost: {spec.host}\r\nAuthorization: Bearer {spec.key}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body


async def _client(spec: LoadSpec, index: int, deadline: float, result: LoadResult) -> None:
    reader, writer = await asyncio.open_connection(spec.host, spec.port)
    sent = 0
    try:
        while time.monotonic() < deadline:
            started = time.perf_counter()
            writer.write(_request(spec, f"benchmark request {spec.prefix} {index}-{sent}: is this post fine?"))
            sent += 1
            status = int((await reader.readline()).split()[1])
            length = 0
            while (line := await reader.readline()) not in (b"\r\n", b""):
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            await reader.readexactly(length)
            result.latencies_ms.append((time.perf_counter() - started) * 1000)
            result.statuses[str(status)] = result.statuses.get(str(status), 0) + 1
    finally:
        writer.close()


async def _stream(spec: LoadSpec, deadline: float, result: LoadResult) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=spec.kafka_bootstrap, linger_ms=0)
    await producer.start()
    try:
        sent = 0
        started = time.monotonic()
        pending = []
        while time.monotonic() < deadline:
            post_id = f"{spec.prefix}-s{sent}"
            post = {"post_id": post_id, "user_id": "bench", "text": f"stream post {spec.prefix} {sent}: fine?"}
            pending.append((post_id, await producer.send(spec.input_topic, orjson.dumps(post), key=post_id.encode())))
            sent += 1
            await asyncio.sleep(max(0.0, started + sent / spec.stream_rate - time.monotonic()))
        for post_id, delivery in pending:
            result.produced[post_id] = (await delivery).timestamp
    finally:
        await producer.stop()


async def run_load(spec: LoadSpec) -> LoadResult:
    """Send the load described by ``spec`` and measure it."""
    result = LoadResult(latencies_ms=[], statuses={}, elapsed_s=0.0, produced={})
    started = time.monotonic()
    deadline = started + spec.seconds
    jobs = [_client(spec, i, deadline, result) for i in range(spec.clients)]
    if spec.stream_rate > 0:
        jobs.append(_stream(spec, deadline, result))
    await asyncio.gather(*jobs)
    result.elapsed_s = time.monotonic() - started
    return result


if __name__ == "__main__":
    outcome = asyncio.run(run_load(LoadSpec.model_validate_json(sys.stdin.buffer.read())))
    sys.stdout.write(outcome.model_dump_json())
