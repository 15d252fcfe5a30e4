"""The tools' schemas: input schemas a model reads cheaply, output schemas every client checks cheaply.

Every host hands the model each tool's name, description and input schema in every conversation, so
`input_schema` keeps what a model needs to call a tool right (types, enums, which fields exist, a
description each) and drops what only a validator reads: limit keywords (`maxLength`, `minimum`, …),
titles, defaults, `anyOf` with null for an optional field (it is optional by not being required), and
the shape of a message inside `messages` (its description names it). Every limit is still enforced:
the arguments are validated against the full pydantic model (`server.calls.parse_arguments`), a
refusal names the argument and its limit, and a description states a limit where a model needs it.

Clients check each result against the tool's declared output schema (the TypeScript SDK with Ajv,
the Python SDK with jsonschema), and some map schemas onto single-`type` dialects. So the schema we
declare is derived from the pydantic result model with:

- every `$ref` inlined and titles, defaults and descriptions dropped (less to walk on every call, and
  less in every `tools/list`; what each field means is in docs/tools.md), except the description of
  a shape declared without properties, which states their types (`Usage`);
- every nullable field declared as an optional field of its one type: our results leave out a field
  that does not apply instead of sending `null` (`model_dump(exclude_none=True)`), so neither
  `anyOf: [X, null]` nor `type: [X, "null"]` (a portability warning in the MCP Inspector) is needed.
"""

from __future__ import annotations

import functools
from typing import Any

from pydantic import BaseModel

_DROPPED = frozenset({"$defs", "title", "default"})
_LIMITS = frozenset(
    {"maxLength", "minLength", "maxItems", "minItems", "maximum", "minimum", "exclusiveMaximum", "exclusiveMinimum"}
)
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
    properties["status"] = {"type": "string", "enum": statuses}
    required = set.intersection(*(set(schema.get("required", [])) for schema in schemas))
    return {"type": "object", "properties": properties, "required": [name for name in properties if name in required]}


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
        if "properties" in node or ("type" in node and "required" not in node):
            out.pop("description", None)  # a validator never reads it; only a shape with no properties keeps it
        properties = node.get("properties")
        if isinstance(properties, dict) and "required" in out:
            nullable = {name for name, prop in properties.items() if _non_null(resolve(prop)) is not None}
            out["required"] = [name for name in out["required"] if name not in nullable]
            if not out["required"]:
                del out["required"]
        return out

    result: dict[str, Any] = walk(schema)
    return result


@functools.cache
def input_schema(model: type[BaseModel]) -> dict[str, Any]:
    """A tool's input schema, as the module docstring says: what a model reads."""
    schema = model.model_json_schema(by_alias=True)
    definitions: dict[str, Any] = schema.get("$defs", {})

    def walk(node: Any, depth: int) -> Any:
        if isinstance(node, list):
            return [walk(item, depth) for item in node]
        if not isinstance(node, dict):
            return node
        if "$ref" in node:
            if depth > 1:  # a message inside `messages`: its description names the shape
                return {"type": "object"}
            node = {**definitions[node["$ref"].rsplit("/", 1)[-1]], **{k: v for k, v in node.items() if k != "$ref"}}
        arm = _non_null(node)
        if arm is not None:
            node = {**arm, **{k: v for k, v in node.items() if k != "anyOf"}}
        out = {
            key: walk(value, depth + (key in ("properties", "items")))
            for key, value in node.items()
            if key not in _DROPPED and key not in _LIMITS and not (key in _NESTED_ONLY and depth != 1)
        }
        if isinstance(out.get("anyOf"), list):  # arms that became alike are one arm
            arms = [arm for i, arm in enumerate(out["anyOf"]) if arm not in out["anyOf"][:i]]
            out = {k: v for k, v in out.items() if k != "anyOf"} | (arms[0] if len(arms) == 1 else {"anyOf": arms})
        return out

    result: dict[str, Any] = walk(schema, 0)
    result["additionalProperties"] = False  # unknown arguments are refused, not dropped
    return result


_NESTED_ONLY = frozenset({"description", "additionalProperties"})
"""Kept on the arguments themselves (depth 1) only: the tool's description says what it takes, and a
message's fields are named in the description of `messages`."""
