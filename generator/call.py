"""``scaffold call``: call any method of a running server, found through server reflection.

The request is JSON (proto3 JSON mapping); the response prints as JSON, or the call's status
code and message. Unary and server-streaming methods are supported.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from generator.errors import ScaffoldError, ToolError, UsageError


class CallFailed(ScaffoldError):
    """The server answered with a non-OK status (already printed)."""


@dataclass(frozen=True)
class CallOptions:
    target: str
    method: str  # "pkg.Service/Method" or "pkg.Service.Method"
    data: str = "{}"
    cacert: Path | None = None
    cert: Path | None = None
    key: Path | None = None
    tls: bool = False
    api_key: str | None = None
    headers: tuple[str, ...] = ()
    timeout: float = 30.0  # the call's deadline
    connect_timeout: float = 3.0  # how long to wait for a connection before giving up


def _split(method: str) -> tuple[str, str]:
    service, sep, name = method.replace("/", ".").rpartition(".")
    if not sep or not service or not name:
        raise UsageError(f"method {method!r} should look like package.Service/Method (e.g. xmpl.br.resources.books.v1.BooksService/GetBook)")
    return service, name


def _metadata(opts: CallOptions) -> list[tuple[str, str]]:
    pairs = []
    for header in opts.headers:
        name, sep, value = header.partition(":")
        if not sep or not name.strip():
            raise UsageError(f"-H {header!r} should look like key:value")
        pairs.append((name.strip().lower(), value.strip()))
    if opts.api_key:
        pairs.append(("x-api-key", opts.api_key))
    return pairs


def _channel(opts: CallOptions):
    import grpc

    if opts.tls or opts.cacert or opts.cert:
        read = lambda p: p.read_bytes() if p else None
        try:
            creds = grpc.ssl_channel_credentials(read(opts.cacert), read(opts.key), read(opts.cert))
        except OSError as exc:
            raise UsageError(f"cannot read {exc.filename}: {exc.strerror}") from None
        return grpc.secure_channel(opts.target, creds)
    return grpc.insecure_channel(opts.target)


def _with_metadata(metadata: list[tuple[str, str]]):
    """A client interceptor that adds ``metadata`` to every streaming call (reflection)."""
    import grpc

    class WithMetadata(grpc.StreamStreamClientInterceptor):
        def intercept_stream_stream(self, continuation, details, request_iterator):
            return continuation(details._replace(metadata=[*(details.metadata or ()), *metadata]), request_iterator)

    return WithMetadata()


def call(opts: CallOptions, echo) -> None:
    import grpc
    from google.protobuf import descriptor_pool, json_format, message_factory

    try:
        from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase
    except ImportError:
        raise ToolError("grpcio-reflection is not installed", hint="pip install grpcio-reflection") from None
    service_name, method_name = _split(opts.method)
    metadata = _metadata(opts)
    with _channel(opts) as channel:
        try:
            grpc.channel_ready_future(channel).result(timeout=opts.connect_timeout)
        except grpc.FutureTimeoutError:
            raise ToolError(f"cannot connect to {opts.target} within {opts.connect_timeout:g} s",
                            hint="is the server running? TLS servers need --cacert; a slow network: --connect-timeout 10") from None
        # Reflection carries the call's credentials: servers with AUTH_MODE set require them.
        database = ProtoReflectionDescriptorDatabase(grpc.intercept_channel(channel, _with_metadata(metadata)))
        pool = descriptor_pool.DescriptorPool(database)
        try:
            service = pool.FindServiceByName(service_name)
        except KeyError:
            raise UsageError(f"{opts.target} has no service {service_name!r}",
                             hint=f"list them with: grpcurl -plaintext {opts.target} list") from None
        except grpc.RpcError as err:
            raise ToolError(f"server reflection failed: {err.code().name}: {err.details()}",
                            hint="the server must enable reflection (every scaffold neuron does); "
                                 "with AUTH_MODE set it needs credentials too (--api-key, -H)") from None
        method = service.methods_by_name.get(method_name)
        if method is None:
            raise UsageError(f"{service_name} has no method {method_name!r}; it has: {', '.join(service.methods_by_name)}")
        if method.client_streaming:
            raise UsageError(f"{method_name} is client-streaming; scaffold call sends one request (use grpcurl)")
        request_cls = message_factory.GetMessageClass(method.input_type)
        response_cls = message_factory.GetMessageClass(method.output_type)
        try:
            request = json_format.Parse(opts.data or "{}", request_cls())
        except json_format.ParseError as exc:
            raise UsageError(f"the request is not a valid {method.input_type.full_name} in JSON: {exc}") from None
        path = f"/{service.full_name}/{method.name}"
        kind = channel.unary_stream if method.server_streaming else channel.unary_unary
        stub = kind(path, request_serializer=lambda m: m.SerializeToString(), response_deserializer=response_cls.FromString)
        try:
            result = stub(request, metadata=metadata, timeout=opts.timeout)
            for response in (result if method.server_streaming else [result]):
                echo(json_format.MessageToJson(response, preserving_proto_field_name=True, indent=2))
        except grpc.RpcError as err:
            raise CallFailed(f"{err.code().name}: {err.details()}") from None
