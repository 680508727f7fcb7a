"""The OpenAPI document of the service, made to say what the service does (checked by
schemathesis with every check, `tests/test_service_fuzz.py`): error bodies are `ErrorBody`
(also for 422), the API-key schemes are declared and required where a key is, and /metrics is
text."""

from __future__ import annotations

__all__ = ["PUBLIC", "document"]

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

#: Paths answered without a key.
PUBLIC = frozenset({"/health"})

_SCHEMES = {
    "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
    "bearer": {"type": "http", "scheme": "bearer"},
}
_ERROR = {"$ref": "#/components/schemas/ErrorBody"}


def document(app: FastAPI) -> dict[str, Any]:
    """The app's OpenAPI document (built once, then cached on the app)."""
    if app.openapi_schema:
        return app.openapi_schema
    doc = get_openapi(
        title=app.title,
        version=app.version,
        summary=app.summary,
        description=app.description,
        routes=app.routes,
    )
    comps = doc.setdefault("components", {})
    comps["securitySchemes"] = _SCHEMES
    schemas = comps.setdefault("schemas", {})
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    for path, ops in doc.get("paths", {}).items():
        for op in ops.values():
            if path not in PUBLIC:
                op["security"] = [{"apiKey": []}, {"bearer": []}]
            for code, resp in op.get("responses", {}).items():
                if code != "200" and code[0] in "45":
                    resp["content"] = {"application/json": {"schema": _ERROR}}
    app.openapi_schema = doc
    return doc
