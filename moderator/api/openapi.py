"""The API's OpenAPI schema, from the same pydantic models the operations validate and answer with.

The gate calls the operations directly (``routes``), so FastAPI has no route to describe them
from; it serves ``/docs`` and ``/openapi.json`` with the paths described here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from moderator.api.routes import DecideQuery
from moderator.api.schema import ErrorResponse, ModerationRequest, ModerationResponse
from moderator.decisions.schema import Decision
from moderator.ingest.schema import Post

REF_TEMPLATE = "#/components/schemas/{model}"
KEY_SCHEME = "HTTPBearer"
ERROR_STATUSES = {"400": "Bad Request", "401": "Unauthorized", "413": "Request Entity Too Large",
                  "429": "Too Many Requests", "500": "Internal Server Error"}


@dataclass(frozen=True)
class OperationDoc:
    """One ``POST`` operation as the docs show it."""

    path: str
    summary: str
    description: str
    body: type[BaseModel]
    answer: type[BaseModel]
    query: type[BaseModel] | None = None


OPERATIONS = (
    OperationDoc("/v1/moderations", "Classify text and images (OpenAI omni-moderation compatible)",
                 "One result per string, or one for a whole array of parts, in omni-moderation's categories.",
                 ModerationRequest, ModerationResponse),
    OperationDoc("/v1/decide", "The project's decision for one post",
                 "The `Decision` the stream would publish for this post; published only with `publish=true`.",
                 Post, Decision, DecideQuery),
)


def _parameters(query: type[BaseModel] | None) -> list[dict[str, Any]]:
    if query is None:
        return []
    schema = query.model_json_schema()
    return [{"name": name, "in": "query", "required": name in schema.get("required", ()),
             "description": field.get("description", ""), "schema": field}
            for name, field in schema["properties"].items()]


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def paths_and_components(operations: Sequence[OperationDoc]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The ``paths`` of ``operations`` and the ``components`` they refer to (schemas and the key scheme)."""
    models: list[tuple[type[BaseModel], JsonSchemaMode]] = [(ErrorResponse, "serialization")]
    for op in operations:
        models += [(op.body, "validation"), (op.answer, "serialization")]
    refs, definitions = models_json_schema(list(dict.fromkeys(models)), ref_template=REF_TEMPLATE)
    error = refs[(ErrorResponse, "serialization")]
    paths = {op.path: {"post": {
        "summary": op.summary, "description": op.description,
        "operationId": op.path.strip("/").replace("/", "_") + "_post",
        "parameters": _parameters(op.query),
        "requestBody": {"required": True, "content": _json(refs[(op.body, "validation")])},
        "responses": {"200": {"description": "Successful Response",
                              "content": _json(refs[(op.answer, "serialization")])},
                      **{code: {"description": text, "content": _json(error)} for code, text in ERROR_STATUSES.items()}},
        "security": [{KEY_SCHEME: []}],
    }} for op in operations}
    components = {"schemas": definitions.get("$defs", {}), "securitySchemes": {KEY_SCHEME: {
        "type": "http", "scheme": "bearer", "description": "An API key from `moderator api-key create NAME`."}}}
    return paths, components


def document(app: FastAPI, operations: Sequence[OperationDoc] = OPERATIONS) -> None:
    """Make ``app``'s OpenAPI schema describe ``operations``."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = generate()  # cached by FastAPI as app.openapi_schema: the additions below stay with it
        paths, components = paths_and_components(operations)
        schema.setdefault("paths", {}).update(paths)
        schema.setdefault("components", {}).update(components)
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
