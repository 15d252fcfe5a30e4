"""OpenTelemetry traces, off unless the standard variables ask for them.

`OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, or `OTEL_TRACES_EXPORTER=otlp`)
turns them on: the SDK and its OTLP/HTTP exporter (the `otel` extra) are imported then and only
then, and installed as the process's tracer provider, which the SDK's own span of each tool call
and ours of each upstream request (`tools.connection.request_span`) report to. The exporter reads the other
standard variables itself (headers, timeout, `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`).
Spans are flushed when the server stops.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from swarm_inference_mcp.server import __version__

log = logging.getLogger(__name__)

ENDPOINTS = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")


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
        from opentelemetry.sdk.trace import TracerProvider  # noqa: PLC0415
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
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    log.info("exporting traces over OTLP/HTTP")
    try:
        yield
    finally:
        provider.shutdown()
