"""OpenAPI 3.1 documents generated from the routes' declarations (as Starlette's schema generator
walks its routes): each route is registered with its `Operation`, and `openapi_document` assembles
paths, parameters, bodies, responses and component schemas from them. Request rules come from the
same `params` specs the handlers parse with, so a rule is written once."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any, Protocol

import attrs

from . import ratelimit
from .params import BodySpec


class ParameterSpec(Protocol):
    """A query parameter spec of `params` (QueryInt, QueryText ...): parses, and documents itself."""

    def parameter(self) -> dict[str, Any]: ...


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


@attrs.frozen
class Body:
    """A request body: its component schema `name`, from a `BodySpec` (what the handler parses) or,
    where the handler reads the body by hand, a JSON Schema."""

    name: str
    schema: BodySpec | Mapping[str, Any]
    required: bool = True
    description: str | None = None

    def json_schema(self) -> dict[str, Any]:
        return self.schema.schema() if isinstance(self.schema, BodySpec) else dict(self.schema)


@attrs.frozen
class Reply:
    """A success response: a JSON body (a component name or an inline schema), other media types
    (`content`, e.g. SSE), OpenAPI links; neither schema nor content: no body (e.g. 204)."""

    description: str
    schema: str | Mapping[str, Any] | None = None
    content: Mapping[str, Any] = attrs.field(factory=dict)
    links: Mapping[str, Any] = attrs.field(factory=dict)

    def response(self) -> dict[str, Any]:
        media: dict[str, Any] = {}
        if self.schema is not None:
            schema = ref(self.schema) if isinstance(self.schema, str) else dict(self.schema)
            media["application/json"] = {"schema": schema}
        media.update(self.content)
        out: dict[str, Any] = {"description": self.description}
        if media:
            out["content"] = media
        if self.links:
            out["links"] = dict(self.links)
        return out


@attrs.frozen
class Operation:
    """What a route does, for the document: declared where the route is registered."""

    operation_id: str
    summary: str
    replies: Mapping[int, Reply]
    #: Error statuses answered in the common error format (401 is added when auth is on).
    errors: tuple[int, ...] = ()
    #: Query and header parameters (path parameters come from the route's pattern).
    parameters: tuple[ParameterSpec | Mapping[str, Any], ...] = ()
    body: Body | None = None
    #: Behind the auth hook (documents 401 and bearer security when auth is on).
    secured: bool = True


_PATH_PARAM = re.compile(r"\{([a-zA-Z_][a-zA-Z0-9_]*)\}")

#: The headers `RateLimited` puts on every response, and on its 429 (all integers).
_RATE_HEADERS, _RETRY_AFTER = (
    {name: {"description": text, "schema": {"type": "integer"}} for name, text in headers.items()}
    for headers in (ratelimit.HEADERS, ratelimit.RETRY_AFTER)
)


def _error_description(
    status: int, descriptions: Mapping[int, str], rate_limit: tuple[int, float] | None, declared: tuple[int, ...]
) -> str:
    if status != 429 or rate_limit is None:
        return descriptions[status]
    limit, window = rate_limit
    text = f"rate_limited: over {limit} requests per {window:g} s by this principal (Retry-After)"
    return f"{text}; or {descriptions[429].removeprefix('rate_limited: ')}" if 429 in declared else text


def openapi_document(
    routes: Iterable[tuple[str, str, Operation]],
    *,
    info: Mapping[str, Any],
    schemas: Mapping[str, Any],
    error_descriptions: Mapping[int, str],
    auth: bool,
    path_parameter: Mapping[str, Any],
    servers: tuple[str, ...] = (),
    rate_limit: tuple[int, float] | None = None,
) -> dict[str, Any]:
    """The document of `routes` ((method, pattern, operation) as the router lists them).
    `schemas`: the response shapes (with an `Error` schema for the error responses); request bodies
    add theirs. `path_parameter`: the schema of every `{name}` in a pattern. `rate_limit`: the
    (requests, window seconds) the server limits each principal to (`Request.rate_limit`): every
    operation then documents 429 and every response the X-RateLimit-* headers."""
    components: dict[str, Any] = dict(schemas)
    paths: dict[str, dict[str, Any]] = {}
    for method, pattern, op in routes:
        parameters = [
            {"name": name, "in": "path", "required": True, "schema": dict(path_parameter)}
            for name in _PATH_PARAM.findall(pattern)
        ]
        parameters += [dict(p) if isinstance(p, Mapping) else p.parameter() for p in op.parameters]
        responses = {str(status): reply.response() for status, reply in sorted(op.replies.items())}
        errors = sorted({*op.errors, *((401,) if auth and op.secured else ()), *((429,) if rate_limit else ())})
        for status in errors:
            responses[str(status)] = {
                "description": _error_description(status, error_descriptions, rate_limit, op.errors),
                "content": {"application/json": {"schema": ref("Error")}},
            }
        if rate_limit is not None:
            for status, response in responses.items():
                response["headers"] = {**_RATE_HEADERS, **(_RETRY_AFTER if status == "429" else {})}
        operation: dict[str, Any] = {"operationId": op.operation_id, "summary": op.summary}
        if parameters:
            operation["parameters"] = parameters
        if op.body is not None:
            components[op.body.name] = op.body.json_schema()
            body: dict[str, Any] = {"required": op.body.required}
            if op.body.description:
                body["description"] = op.body.description
            operation["requestBody"] = {**body, "content": {"application/json": {"schema": ref(op.body.name)}}}
        operation["responses"] = responses
        if auth and not op.secured:
            operation["security"] = []
        paths.setdefault(pattern, {})[method.lower()] = operation
    doc: dict[str, Any] = {"openapi": "3.1.0", "info": dict(info)}
    if servers:
        doc["servers"] = [{"url": url} for url in servers]
    doc["paths"] = paths
    doc["components"] = {"schemas": components}
    if auth:
        doc["components"]["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
        doc["security"] = [{"bearer": []}]
    return doc


__all__ = ["Body", "Operation", "ParameterSpec", "Reply", "openapi_document", "ref"]
