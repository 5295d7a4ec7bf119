"""The JSON Schema of report.json (``schema.json`` beside this file) and its validation.

``jsonschema`` validates when it is installed; otherwise a small validator covers the keywords schema.json uses
(type, const, enum, required, properties, additionalProperties, items, prefixItems, minItems, maxItems, minimum,
$ref into $defs), so a report is checked either way.

Example:
    >>> try:
    ...     validate_report({"kind": "glassformer.report"})
    ... except ReportSchemaError as e:
    ...     print(e)
    report.json does not follow schema.json at (root): 'schema_version' is a required property
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any


class ReportSchemaError(ValueError):
    """A report does not follow schema.json; the message gives the JSON path and what was expected."""


@cache
def load_schema() -> dict[str, Any]:
    """The report schema (schema.json, shipped as package data)."""
    return json.loads(resources.files("glassformer.analysis.report").joinpath("schema.json").read_text())


def validate_report(report: Any, *, use_jsonschema: bool = True) -> None:
    """Raise :class:`ReportSchemaError` naming the first place where ``report`` breaks schema.json."""
    schema = load_schema()
    if use_jsonschema:
        try:
            import jsonschema
        except ImportError:
            use_jsonschema = False
    if use_jsonschema:
        validator = jsonschema.Draft202012Validator(schema)
        error = jsonschema.exceptions.best_match(validator.iter_errors(report))
        if error is not None:
            where = "/".join(str(p) for p in error.absolute_path) or "(root)"
            raise ReportSchemaError(f"report.json does not follow schema.json at {where}: {error.message}")
        return
    problem = _check(report, schema, schema, "")
    if problem is not None:
        where, message = problem
        raise ReportSchemaError(f"report.json does not follow schema.json at {where or '(root)'}: {message}")


_TYPES = {"object": dict, "array": list, "string": str, "boolean": bool, "null": type(None)}


def _is_type(value: Any, name: str) -> bool:
    if name == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if name == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, _TYPES[name])


def _check(value: Any, schema: dict[str, Any], root: dict[str, Any], path: str) -> tuple[str, str] | None:
    """The first (path, message) where ``value`` breaks ``schema``, or None."""
    if "$ref" in schema:
        target: Any = root
        for part in schema["$ref"].lstrip("#/").split("/"):
            target = target[part]
        return _check(value, target, root, path)
    if "type" in schema:
        types = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        if not any(_is_type(value, t) for t in types):
            return path, f"{value!r} is not of type {' or '.join(map(repr, types))}"
    if "const" in schema and value != schema["const"]:
        return path, f"{schema['const']!r} was expected"
    if "enum" in schema and value not in schema["enum"]:
        return path, f"{value!r} is not one of {schema['enum']!r}"
    if "minimum" in schema and _is_type(value, "number") and value < schema["minimum"]:
        return path, f"{value!r} is less than the minimum of {schema['minimum']!r}"
    if isinstance(value, dict):
        for key in schema.get("required", []):
            if key not in value:
                return path, f"{key!r} is a required property"
        props = schema.get("properties", {})
        for key, item in value.items():
            sub = props.get(key, schema.get("additionalProperties"))
            if isinstance(sub, dict) and (problem := _check(item, sub, root, f"{path}/{key}".lstrip("/"))):
                return problem
    if isinstance(value, list):
        if len(value) < schema.get("minItems", 0):
            return path, f"{value!r} should be non-empty" if schema["minItems"] == 1 else "too few items"
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            return path, "too many items"
        prefix = schema.get("prefixItems", [])
        for i, item in enumerate(value):
            sub = prefix[i] if i < len(prefix) else schema.get("items")
            if isinstance(sub, dict) and (problem := _check(item, sub, root, f"{path}/{i}".lstrip("/"))):
                return problem
    return None
