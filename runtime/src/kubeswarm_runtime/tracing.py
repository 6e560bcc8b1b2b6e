"""Traces (OpenTelemetry): W3C trace context from an HTTP request (MCP, A2A) through the task's NATS headers into
the task's run, its model calls and its tool calls; a task created by a tool is a child of that call.

Off unless an OTLP endpoint is set (``OTEL_EXPORTER_OTLP_ENDPOINT`` or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``, and
``OTEL_SDK_DISABLED`` not ``true``): then every hook here checks one global and returns (no span, no header, the
SDK not even imported). On, an SDK ``TracerProvider`` exports in batches over OTLP/HTTP, configured by the standard
``OTEL_*`` variables (endpoint, headers, timeout, service name, resource attributes, sampler).

Attribute names are the OpenTelemetry semantic conventions': GenAI (``gen_ai.*``) for model and tool calls,
messaging (``messaging.*``) for the task queue, HTTP for requests.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator, Mapping, MutableMapping
from typing import TYPE_CHECKING, Any

from aiohttp import web
from aiohttp.typedefs import Handler
from opentelemetry import trace
from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as gen_ai
from opentelemetry.semconv._incubating.attributes import messaging_attributes as messaging
from opentelemetry.trace import SpanKind, Status, StatusCode, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from . import __version__

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

log = logging.getLogger(__name__)

ENDPOINT_VARS = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
PROPAGATOR = TraceContextTextMapPropagator()
# Our model providers by their GenAI semantic-convention names.
PROVIDER_NAMES = {"anthropic": "anthropic", "bedrock": "aws.bedrock", "openai": "openai"}
# The kinds of kubeswarm_llm_tokens_total as GenAI usage attributes.
USAGE_ATTRIBUTES = {
    "input": gen_ai.GEN_AI_USAGE_INPUT_TOKENS,
    "output": gen_ai.GEN_AI_USAGE_OUTPUT_TOKENS,
    "cache_read": gen_ai.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS,
    "cache_write": gen_ai.GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS,
}

_tracer: Tracer | None = None


def enabled() -> bool:
    return _tracer is not None


def configure(provider: TracerProvider | None) -> None:
    """Trace into ``provider`` from now on (None: off). ``setup_from_env`` calls it; tests call it with an in-memory exporter."""
    global _tracer
    _tracer = provider.get_tracer("kubeswarm_runtime", __version__) if provider is not None else None


def wanted(environ: Mapping[str, str] = os.environ) -> bool:
    return any(environ.get(name) for name in ENDPOINT_VARS) and environ.get("OTEL_SDK_DISABLED", "").lower() != "true"


def setup_from_env(service_name: str, attributes: Mapping[str, str]) -> TracerProvider | None:
    """An exporting provider when the environment asks for one (see the module's text), else None and tracing stays off."""
    if not wanted():
        return None
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    if os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf") != "http/protobuf":
        log.warning(
            "OTEL_EXPORTER_OTLP_PROTOCOL=%s: traces are exported over OTLP/HTTP (protobuf) only", os.environ["OTEL_EXPORTER_OTLP_PROTOCOL"]
        )
    # OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES win over these defaults.
    resource = Resource.create({"service.name": service_name, "service.version": __version__, **attributes})
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    configure(provider)
    log.info("tracing: exporting spans over OTLP/HTTP as %s", resource.attributes.get("service.name"))
    return provider


def inject(headers: MutableMapping[str, str]) -> None:
    """Put the current trace context (``traceparent``, ``tracestate``) into outgoing headers; nothing outside a span.

    A task carries its creator's span this way, and its run is that span's child: no span of its own for the
    queueing (one span fewer per task; the run's span says where it came from)."""
    if _tracer is not None:
        PROPAGATOR.inject(headers)


@contextlib.contextmanager
def _span(name: str, kind: SpanKind, attributes: Mapping[str, Any], parent_headers: Mapping[str, str] | None) -> Iterator[trace.Span]:
    assert _tracer is not None
    context = PROPAGATOR.extract(parent_headers) if parent_headers is not None else None
    with _tracer.start_as_current_span(name, context=context, kind=kind, attributes=dict(attributes)) as span:
        yield span


def span(
    name: str,
    kind: SpanKind = SpanKind.INTERNAL,
    attributes: Mapping[str, Any] | None = None,
    *,
    parent_headers: Mapping[str, str] | None = None,
) -> contextlib.AbstractContextManager[trace.Span | None]:
    """A span, current within the ``with`` (a child of ``parent_headers``' context when given, else of the current one);
    ``None`` and no work when tracing is off. An exception leaving the block marks the span as an error."""
    if _tracer is None:
        return contextlib.nullcontext()
    return _span(name, kind, attributes or {}, parent_headers)


def failed(current: trace.Span | None, description: str) -> None:
    """Mark a span as failed (an outcome that is no exception: a dead task, a tool error answered to the model)."""
    if current is not None:
        current.set_status(Status(StatusCode.ERROR, description))


def run_task(
    headers: Mapping[str, str] | None, subject: str, task_id: str, capability: str, attempt: int, agent: str
) -> contextlib.AbstractContextManager[trace.Span | None]:
    """Around one run of a task: a consumer span, child of the context its creator put into the message's headers."""
    if _tracer is None:
        return contextlib.nullcontext()
    attributes = _processing(subject, capability) | {
        gen_ai.GEN_AI_AGENT_NAME: agent,
        messaging.MESSAGING_MESSAGE_ID: task_id,
        "kubeswarm.task.attempt": attempt,
    }
    return _span(f"process {capability}", SpanKind.CONSUMER, attributes, headers or {})


def answer_request(
    headers: Mapping[str, str] | None, subject: str, capability: str, replica: str
) -> contextlib.AbstractContextManager[trace.Span | None]:
    """Around answering one capability request (request/reply): a server span, child of the requester's context."""
    if _tracer is None:
        return contextlib.nullcontext()
    attributes = _processing(subject, capability) | {gen_ai.GEN_AI_AGENT_ID: replica}
    return _span(f"answer {capability}", SpanKind.SERVER, attributes, headers or {})


def _processing(subject: str, capability: str) -> dict[str, Any]:
    return {
        messaging.MESSAGING_SYSTEM: "nats",
        messaging.MESSAGING_OPERATION_TYPE: "process",
        messaging.MESSAGING_DESTINATION_NAME: subject,
        "kubeswarm.task.capability": capability,
    }


def model_call(provider: str, model: str, max_tokens: int) -> contextlib.AbstractContextManager[trace.Span | None]:
    """Around one model call: a GenAI ``chat`` client span."""
    if _tracer is None:
        return contextlib.nullcontext()
    attributes = {
        gen_ai.GEN_AI_OPERATION_NAME: gen_ai.GenAiOperationNameValues.CHAT.value,
        gen_ai.GEN_AI_PROVIDER_NAME: PROVIDER_NAMES.get(provider, provider),
        gen_ai.GEN_AI_REQUEST_MODEL: model,
        gen_ai.GEN_AI_REQUEST_MAX_TOKENS: max_tokens,
    }
    return _span(f"chat {model}", SpanKind.CLIENT, attributes, None)


def model_replied(current: trace.Span | None, model: str | None, stop_reason: str | None, usage: Mapping[str, int]) -> None:
    if current is None:
        return
    if model:
        current.set_attribute(gen_ai.GEN_AI_RESPONSE_MODEL, model)
    if stop_reason:
        current.set_attribute(gen_ai.GEN_AI_RESPONSE_FINISH_REASONS, [stop_reason])
    for kind, count in usage.items():
        if kind in USAGE_ATTRIBUTES:
            current.set_attribute(USAGE_ATTRIBUTES[kind], count)


def tool_call(name: str, call_id: str) -> contextlib.AbstractContextManager[trace.Span | None]:
    """Around one tool call of the model: a GenAI ``execute_tool`` span (a task it creates is its child)."""
    if _tracer is None:
        return contextlib.nullcontext()
    attributes = {
        gen_ai.GEN_AI_OPERATION_NAME: gen_ai.GenAiOperationNameValues.EXECUTE_TOOL.value,
        gen_ai.GEN_AI_TOOL_NAME: name,
        gen_ai.GEN_AI_TOOL_CALL_ID: call_id,
        gen_ai.GEN_AI_TOOL_TYPE: "function",
    }
    return _span(f"execute_tool {name}", SpanKind.INTERNAL, attributes, None)


def http_middleware(paths: frozenset[str]) -> Any:
    """A server span per request on ``paths`` (the JSON-RPC endpoints), child of the caller's ``traceparent``."""

    @web.middleware
    async def trace_requests(request: web.Request, handler: Handler) -> web.StreamResponse:
        if _tracer is None or request.path not in paths:
            return await handler(request)
        attributes = {"http.request.method": request.method, "url.path": request.path}
        with _span(f"{request.method} {request.path}", SpanKind.SERVER, attributes, request.headers) as current:
            try:
                response = await handler(request)
            except web.HTTPException as exc:
                current.set_attribute("http.response.status_code", exc.status)
                raise
            current.set_attribute("http.response.status_code", response.status)
            return response

    return trace_requests
