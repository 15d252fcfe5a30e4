"""OpenTelemetry traces, off unless the standard variables ask for them.

`OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, or `OTEL_TRACES_EXPORTER=otlp`)
turns them on: the SDK and its OTLP/HTTP exporter (the `otel` extra) are imported then and only
then, and installed as the process's tracer provider, which the SDK's own span of each tool call
and ours of each upstream request (`tools.connection.request_span`) report to. The exporter reads the other
standard variables itself (headers, timeout, `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`).
Spans are flushed when the server stops.

What a client sends cannot grow them: every span has limits (`LIMITS`: attributes, their length,
events, links), names are cut to `MAX_NAME` (the SDK names a tool call's span after the tool the
client named), and the export queue holds at most `QUEUE_SPANS`, so a slow collector costs at
most `QUEUE_SPANS` spans of bounded size; past that the SDK drops spans rather than growing the
server: `DROPPED` counts them (`swarm_mcp_spans_dropped_total`); the SDK logs it at most once in 20 s.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from swarm_inference_mcp.server import __version__

log = logging.getLogger(__name__)

ENDPOINTS = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")


class DroppedSpans:
    """How many spans the export queue had no room for (the SDK logs one in 20 seconds, and its own
    metrics of it are an internal, off by default)."""

    count = 0


DROPPED = DroppedSpans()
MAX_NAME = 128
"""Characters of a span's name."""
QUEUE_SPANS = 512
"""Spans waiting for the exporter; each is at most about 32 attributes of 512 characters (16 KiB)."""
BATCH_SPANS = 128
"""Spans in one export: at most about 2 MiB, under a collector's usual 4 MiB limit."""


def wanted(environ: Mapping[str, str]) -> bool:
    """Whether the environment asks for traces, as OpenTelemetry's variables say."""
    exporter = environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporter == "none" or environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    return bool(exporter) or any(environ.get(name, "").strip() for name in ENDPOINTS)


@contextmanager
def traced(environ: Mapping[str, str]) -> Iterator[None]:
    """Export this process's spans while inside, when the environment asks for it; flush them at the end."""
    if not wanted(environ):
        yield
        return
    exporter = environ.get("OTEL_TRACES_EXPORTER", "").strip().lower() or "otlp"
    if exporter != "otlp":
        log.error("OTEL_TRACES_EXPORTER is %r; only otlp (over HTTP) is supported, so traces are off", exporter)
        yield
        return
    try:
        from opentelemetry import trace  # noqa: PLC0415 - only with traces
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter  # noqa: PLC0415
        from opentelemetry.sdk.resources import Resource  # noqa: PLC0415
        from opentelemetry.sdk.trace import SpanLimits, SpanProcessor, TracerProvider  # noqa: PLC0415
        from opentelemetry.sdk.trace.export import BatchSpanProcessor  # noqa: PLC0415
    except ImportError:
        log.error(
            "traces are asked for (OTEL_EXPORTER_OTLP_ENDPOINT), but the OpenTelemetry SDK is not installed: "
            "pip install 'swarm-inference-mcp[otel]'; traces are off"
        )
        yield
        return
    resource = Resource.create({"service.version": __version__})
    if "service.name" not in resource.attributes or resource.attributes["service.name"] == "unknown_service":
        resource = resource.merge(Resource.create({"service.name": "swarm-inference-mcp"}))
    limits = SpanLimits(
        max_span_attributes=32,
        max_attribute_length=512,
        max_events=16,
        max_event_attributes=8,
        max_links=8,
        max_link_attributes=8,
    )

    class ClippedNames(SpanProcessor):
        """Cuts a span's name to `MAX_NAME` as it starts (a client chooses part of some names)."""

        def on_start(self, span: Any, parent_context: Any = None) -> None:
            if len(span.name) > MAX_NAME:
                span.update_name(span.name[:MAX_NAME])

    provider = TracerProvider(resource=resource, span_limits=limits)
    provider.add_span_processor(ClippedNames())

    class CountedBatches(BatchSpanProcessor):
        """The SDK's batch processor, counting each span it is about to drop for a full queue (it keeps
        the queue in a private `BatchProcessor`: without it, nothing is counted and nothing breaks)."""

        def on_end(self, span: Any) -> None:
            batches = getattr(self, "_batch_processor", None)
            queue, room = getattr(batches, "_queue", None), getattr(batches, "_max_queue_size", None)
            if span.context and span.context.trace_flags.sampled and queue is not None and len(queue) == room:
                DROPPED.count += 1
            super().on_end(span)

    provider.add_span_processor(
        CountedBatches(OTLPSpanExporter(), max_queue_size=QUEUE_SPANS, max_export_batch_size=BATCH_SPANS)
    )
    trace.set_tracer_provider(provider)
    log.info("exporting traces over OTLP/HTTP")
    try:
        yield
    finally:
        provider.shutdown()
