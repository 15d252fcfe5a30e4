"""Traces as an OpenTelemetry collector receives them: the server's SDK exports over OTLP/HTTP to a
loopback receiver here, which decodes the protobuf with `opentelemetry-proto`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx2
import pytest
from mcp import Client, StdioServerParameters
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from tests.conftest import fake_env
from tests.fake_upstream import FakeUpstream, eventually
from tests.servers import SCRIPT

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

TRACE_ID, CALLER_SPAN = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
PROMPT = "prompt-MARKER-5e1d swarm question"


@contextmanager
def otlp_receiver() -> Iterator[tuple[str, list[bytes]]]:
    """An OTLP/HTTP endpoint on loopback that keeps every body posted to /v1/traces."""
    bodies: list[bytes] = []

    class Receive(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            if self.path == "/v1/traces":
                bodies.append(body)
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *_: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Receive)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", bodies
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def stalled_collector() -> Iterator[tuple[str, Callable[[], None]]]:
    """An OTLP/HTTP endpoint on loopback that answers nothing until released: (its URL, release)."""
    stalled = threading.Event()

    class Stalled(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            stalled.wait(60)
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *_: Any) -> None:
            pass

    collector = ThreadingHTTPServer(("127.0.0.1", 0), Stalled)
    threading.Thread(target=collector.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{collector.server_address[1]}", stalled.set
    finally:
        stalled.set()
        collector.shutdown()
        collector.server_close()


def spans_of(bodies: list[bytes]) -> list[Any]:
    spans = []
    for body in bodies:
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        for resource in request.resource_spans:
            for scope in resource.scope_spans:
                spans += list(scope.spans)
    return spans


def attributes(span: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kv in span.attributes:
        value = kv.value
        kind = value.WhichOneof("value")
        out[kv.key] = (
            [v.string_value for v in value.array_value.values] if kind == "array_value" else getattr(value, kind)
        )
    return out


async def test_a_tool_call_and_its_upstream_request_are_spans_of_the_callers_trace(
    fake: FakeUpstream, tmp_path: Path
) -> None:
    canary = "sw-CANARY-traces-3c0d"
    fake.keys.update(swarms=canary)
    try:
        with otlp_receiver() as (endpoint, bodies):
            env = fake_env(
                fake,
                SWARMS_API_KEY=canary,
                SWARM_MCP_STATE_DB=str(tmp_path / "state.db"),
                OTEL_EXPORTER_OTLP_ENDPOINT=endpoint,
                OTEL_BSP_SCHEDULE_DELAY="50",
            )
            server = StdioServerParameters(command=str(SCRIPT), env={"PATH": os.environ.get("PATH", ""), **env})
            async with Client(server) as client:
                meta = {"traceparent": f"00-{TRACE_ID}-{CALLER_SPAN}-01"}
                result = await client.call_tool("ask_swarm", {"prompt": PROMPT}, meta=meta)  # type: ignore[arg-type]
            assert not result.is_error
            await eventually(lambda: any(s.name.startswith("chat") for s in spans_of(bodies)), timeout_s=15)
    finally:
        fake.keys.update(swarms="sw-test-key-0002")

    spans = spans_of(bodies)
    (tool,) = [s for s in spans if s.name == "tools/call ask_swarm"]
    (upstream,) = [s for s in spans if s.name.startswith("chat")]
    assert tool.trace_id.hex() == TRACE_ID
    assert tool.parent_span_id.hex() == CALLER_SPAN  # the caller's traceparent, continued
    assert upstream.trace_id.hex() == TRACE_ID
    assert upstream.parent_span_id == tool.span_id
    seen = attributes(upstream)
    assert seen["gen_ai.system"] == "swarms"
    assert seen["gen_ai.operation.name"] == "chat"
    assert seen["gen_ai.request.model"] == seen["gen_ai.response.model"] == "gpt-4.1-mini"
    assert seen["gen_ai.usage.input_tokens"] == len(PROMPT.split())
    assert seen["gen_ai.usage.output_tokens"] == len(f"swarms says: {PROMPT}".split())
    assert seen["gen_ai.response.finish_reasons"] == ["stop"]
    assert seen["swarm_mcp.job.id"].startswith("j_")
    (sent,) = fake.seen("swarms")
    assert sent.headers["traceparent"] == f"00-{TRACE_ID}-{upstream.span_id.hex()}-01"  # the upstream's parent
    everything = b"".join(bodies)
    for secret in (canary.encode(), b"MARKER-5e1d", b"swarm question"):
        assert secret not in everything


def test_stdio_start_up_imports_neither_metrics_nor_the_tracing_sdk(tmp_path: Path, fake: FakeUpstream) -> None:
    """The extra is installed here; with nothing configured, a stdio server loads none of it, nor the
    Prometheus client (only the HTTP gateway serves metrics)."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "swarm_inference_mcp.server"],
        env={"PATH": os.environ.get("PATH", ""), **fake_env(fake), "SWARM_MCP_STATE_DB": str(tmp_path / "s.db")},
        input='{"jsonrpc": "2.0", "id": 1, "method": "ping"}\n',
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert "swarm_inference_mcp.server.app" in done.stderr, done.stderr[-2000:]  # it did start serving
    for module in ("opentelemetry.sdk", "opentelemetry.exporter", "requests", "prometheus_client"):
        assert f" {module}" not in done.stderr, module
    assert "swarm_inference_mcp.server.gateway.metrics" not in done.stderr


def test_traces_asked_for_without_the_extra_are_one_sentence_and_the_server_serves(
    tmp_path: Path, fake: FakeUpstream
) -> None:
    """As in an environment without the `otel` extra: a folder first on the path whose `opentelemetry.sdk`
    cannot be imported (the API, which the MCP SDK needs, stays). The log says what to install."""
    missing = tmp_path / "without-sdk" / "opentelemetry" / "sdk"
    missing.mkdir(parents=True)
    (missing / "__init__.py").write_text("raise ImportError('no opentelemetry-sdk in this environment')\n")
    env = {
        "PATH": os.environ.get("PATH", ""),
        **fake_env(fake),
        "SWARM_MCP_STATE_DB": str(tmp_path / "s.db"),
        "PYTHONPATH": str(tmp_path / "without-sdk"),
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9",
    }
    done = subprocess.run(
        [SCRIPT],
        env=env,
        input='{"jsonrpc": "2.0", "id": 1, "method": "ping"}\n',
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert (
        "traces are asked for (OTEL_EXPORTER_OTLP_ENDPOINT), but the OpenTelemetry SDK is not installed: "
        "pip install 'swarm-inference-mcp[otel]'; traces are off"
    ) in done.stderr
    assert "Traceback" not in done.stderr


def test_huge_ids_and_tool_names_with_a_stalled_collector_stay_in_bounded_memory(fake: FakeUpstream) -> None:
    """40 requests, each with a 1.9 MB JSON-RPC id and a 1.9 MB tool name, while the collector answers
    nothing: spans are clipped (attributes to 512 characters, names to 128) and queued at most 512,
    so the server's peak memory stays under 250 MiB (unclipped, it passed a gigabyte)."""
    pipes = {"stdin": subprocess.PIPE, "stdout": subprocess.PIPE, "stderr": subprocess.DEVNULL}
    with stalled_collector() as (endpoint, release):
        env = {
            "PATH": os.environ.get("PATH", ""),
            **fake_env(fake, OTEL_EXPORTER_OTLP_ENDPOINT=endpoint),
            "OTEL_BSP_SCHEDULE_DELAY": "50",
        }
        with subprocess.Popen([SCRIPT], env=env, **pipes) as process:  # type: ignore[call-overload]

            def ask(message: dict[str, Any]) -> None:
                process.stdin.write(json.dumps(message).encode() + b"\n")
                process.stdin.flush()
                process.stdout.readline()

            init = {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}
            ask({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": init})
            process.stdin.write(b'{"jsonrpc": "2.0", "method": "notifications/initialized"}\n')
            for n in range(40):
                huge = f"{n}-" + "x" * 1_900_000
                ask({"jsonrpc": "2.0", "id": huge, "method": "tools/call", "params": {"name": huge, "arguments": {}}})
            status = Path(f"/proc/{process.pid}/status").read_text()
            peak_kib = int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:")))
            release()  # so that the server can flush its spans as it stops
            process.stdin.close()
            process.wait(timeout=60)
    assert peak_kib < 250 * 1024, peak_kib


def test_spans_a_stalled_collector_cannot_take_are_counted_and_said_once(fake: FakeUpstream, tmp_path: Path) -> None:
    """Over HTTP, with a collector that answers nothing: past the export queue, spans are dropped, counted
    in swarm_mcp_spans_dropped_total, and said in the log a few times at most, not once a span."""
    from tests.servers import free_port, http_server  # noqa: PLC0415

    metrics = free_port()
    with stalled_collector() as (endpoint, _):
        env = {
            "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
            "OTEL_BSP_SCHEDULE_DELAY": "50",
            "SWARM_MCP_METRICS_ADDR": f"127.0.0.1:{metrics}",
        }
        with http_server(fake, tmp_path, "--stateless", **env) as (base, _), httpx2.Client(timeout=10) as http:
            body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
            headers = {"Accept": "application/json, text/event-stream"}
            for _ in range(900):  # a span each, past the queue of 512 the stalled exporter never drains
                http.post(f"{base}/mcp", json=body, headers=headers)
            scraped = http.get(f"http://127.0.0.1:{metrics}/metrics").text
            log = (tmp_path / "server.stderr").read_text()
    (dropped,) = [line for line in scraped.splitlines() if line.startswith("swarm_mcp_spans_dropped_total ")]
    assert float(dropped.split()[1]) >= 900 - 512 - 128  # what the queue and the stalled batch could not hold
    assert 1 <= log.count("Queue full, dropping") <= 3  # the SDK says it once in 20 s, not once a span


async def test_a_callers_long_model_name_is_clipped_in_the_span_name(fake: FakeUpstream, tmp_path: Path) -> None:
    """The model is the caller's choice: a 200-character one names the upstream span cut to 64."""
    model = "m" * 200
    with otlp_receiver() as (endpoint, bodies):
        env = fake_env(
            fake, SWARM_MCP_STATE_DB="off", OTEL_EXPORTER_OTLP_ENDPOINT=endpoint, OTEL_BSP_SCHEDULE_DELAY="50"
        )
        server = StdioServerParameters(command=str(SCRIPT), env={"PATH": os.environ.get("PATH", ""), **env})
        async with Client(server) as client:
            assert not (await client.call_tool("ask_swarm", {"prompt": "long model", "model": model})).is_error
        await eventually(lambda: any(s.name.startswith("chat") for s in spans_of(bodies)), timeout_s=15)
    (upstream,) = [s for s in spans_of(bodies) if s.name.startswith("chat")]
    assert upstream.name == "chat " + "m" * 64
    assert attributes(upstream)["gen_ai.request.model"] == model  # an attribute keeps up to 512 characters
