"""Output schemas that every MCP client can check cheaply and map onto its own dialect.

Clients check each result against the tool's declared output schema (the TypeScript SDK with Ajv,
the Python SDK with jsonschema), and some map schemas onto single-`type` dialects. So the schema we
declare is derived from the pydantic result model with:

- every `$ref` inlined and titles and defaults dropped (less to walk on every call);
- every nullable field declared as an optional field of its one type: our results leave out a field
  that does not apply instead of sending `null` (`model_dump(exclude_none=True)`), so neither
  `anyOf: [X, null]` nor `type: [X, "null"]` (a portability warning in the MCP Inspector) is needed.
"""

from __future__ import annotations

import functools
from typing import Any

from pydantic import BaseModel

_DROPPED = frozenset({"$defs", "title", "default"})
_NULL = {"type": "null"}


def _non_null(node: dict[str, Any]) -> dict[str, Any] | None:
    """The non-null arm of `anyOf: [X, null]`, or None when `node` is not such a union."""
    arms = node.get("anyOf")
    if isinstance(arms, list) and len(arms) == 2 and _NULL in arms:
        other: dict[str, Any] = next(arm for arm in arms if arm != _NULL)
        return other
    return None


@functools.cache  # several tools share a shape; building one costs milliseconds of start-up
def output_schema(*models: type[BaseModel]) -> dict[str, Any]:
    """The schema of any of `models`' `model_dump(mode="json", exclude_none=True)`, as clients should see it.

    Several models (an answer, or a job handle) are merged into one flat object: the union of their
    properties, each declared once, with `status` (each model's constant) as an enum and only what
    all of them require required. A flat object is cheaper to check than `anyOf` and maps onto every
    client's dialect.
    """
    schemas = [_portable(model) for model in models]
    if len(schemas) == 1:
        return schemas[0]
    properties: dict[str, Any] = {}
    statuses: list[str] = []
    for schema in schemas:
        for name, prop in schema["properties"].items():
            if name == "status" and prop["const"] not in statuses:
                statuses.append(prop["const"])
            properties.setdefault(name, prop)
    properties["status"] = {
        "type": "string",
        "enum": statuses,
        "description": "done: an answer; running: a job handle.",
    }
    required = set.intersection(*(set(schema.get("required", [])) for schema in schemas))
    return {
        "type": "object",
        "description": " Or: ".join(schema["description"] for schema in schemas),
        "properties": properties,
        "required": [name for name in properties if name in required],
    }


@functools.cache
def _portable(model: type[BaseModel]) -> dict[str, Any]:
    """One model's schema, made portable as the module docstring says."""
    schema = model.model_json_schema(mode="serialization")
    definitions: dict[str, Any] = schema.get("$defs", {})

    def resolve(node: dict[str, Any]) -> dict[str, Any]:
        if "$ref" in node:
            return {**definitions[node["$ref"].rsplit("/", 1)[-1]], **{k: v for k, v in node.items() if k != "$ref"}}
        return node

    def walk(node: Any) -> Any:
        if isinstance(node, list):
            return [walk(item) for item in node]
        if not isinstance(node, dict):
            return node
        node = resolve(node)
        arm = _non_null(node)
        if arm is not None:
            node = {**resolve(arm), **{k: v for k, v in node.items() if k != "anyOf"}}
        out = {key: walk(value) for key, value in node.items() if key not in _DROPPED}
        properties = node.get("properties")
        if isinstance(properties, dict) and "required" in out:
            nullable = {name for name, prop in properties.items() if _non_null(resolve(prop)) is not None}
            out["required"] = [name for name in out["required"] if name not in nullable]
            if not out["required"]:
                del out["required"]
        return out

    result: dict[str, Any] = walk(schema)
    return result
