"""The API's OpenAPI schema: FastAPI's, plus what the routes handle themselves (request bodies, the key scheme).

The routes read their bodies as bytes and the gate checks the key, so FastAPI sees neither; both
are added here from the same pydantic models the routes validate with, so ``/docs`` and the
official clients' view of the API stay exact.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

REF_TEMPLATE = "#/components/schemas/{model}"
KEY_SCHEME = "HTTPBearer"


def document_bodies(app: FastAPI, bodies: Mapping[str, type[BaseModel]]) -> None:
    """Make ``app``'s schema show each ``POST`` path's JSON body model and the bearer-key requirement."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = generate()  # cached by FastAPI as app.openapi_schema: the additions below stay with it
        refs, definitions = models_json_schema([(model, "validation") for model in bodies.values()],
                                               ref_template=REF_TEMPLATE)
        components = schema.setdefault("components", {})
        components.setdefault("schemas", {}).update(definitions.get("$defs", {}))
        components.setdefault("securitySchemes", {})[KEY_SCHEME] = {
            "type": "http", "scheme": "bearer", "description": "An API key from `moderator api-key create NAME`."}
        for path, model in bodies.items():
            operation = schema["paths"][path]["post"]
            operation["requestBody"] = {"required": True,
                                        "content": {"application/json": {"schema": refs[(model, "validation")]}}}
            operation["security"] = [{KEY_SCHEME: []}]
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
