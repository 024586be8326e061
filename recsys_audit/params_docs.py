"""The params file explained by its own model: a JSON Schema for editors and the field reference in Markdown.

Both are derived from :class:`recsys_audit.params.Params` (``recsys-audit params schema`` / ``params docs``); the
committed ``params/schema.json`` and ``params/README.md`` are their output, and a test keeps them equal.
"""

from __future__ import annotations

import json
from typing import Any

from recsys_audit.params import PARAMS_DOCS, Params

SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
SCHEMA_FILE = "params/schema.json"
SECRET_PATTERN = "^(env|file):.+"


def json_schema() -> dict[str, Any]:
    """The JSON Schema of a params file (draft 2020-12), as pydantic derives it from the model."""
    schema = Params.model_json_schema(mode="validation")
    return {"$schema": SCHEMA_DIALECT, "title": "recsys-audit params file", **schema}


def json_schema_text() -> str:
    return json.dumps(json_schema(), indent=2, ensure_ascii=False) + "\n"


# --- the Markdown reference ------------------------------------------------------------------------------------

INTRO = f"""\
# Params files

<!-- Generated from recsys_audit/params.py by `recsys-audit params docs > {PARAMS_DOCS}`: edit the model, not this
file (a test checks that they agree). -->

A params file (`params/<env>.yaml`) describes one environment of recsys-service and how to audit it. Everything the
kit knows about a target comes from this file, the probes and the config sources it names.

- **Check a file:** `recsys-audit params check params/<env>.yaml` lists every problem at once, each as
  `file:line:column: field: what is wrong — fix`, with "did you mean" for misspelt fields and values.
- **Editors:** `{SCHEMA_FILE}` is the JSON Schema of the file (`recsys-audit params schema` prints it). With a YAML
  language server, the first line `# yaml-language-server: $schema=schema.json` gives completion, descriptions and
  checks as you type.
- **Secrets** are never written in the file: a secret field holds a reference, `env:VARIABLE` or `file:PATH`. A file
  secret must lie under the params file's folder, or under the one folder named by `secrets_root`. Every reference is
  resolved when the file loads, so a variable that is not set is reported with the other problems.
- **Paths** are relative to the params file. `include` folds fragments in before validation (mappings merge key by
  key, this file wins; lists are concatenated).
- **Fields** not listed here are refused. Mappings (`auth`, `policies`, …) may be left out: their fields then take
  the defaults below.
"""


def _resolve(schema: dict[str, Any], defs: dict[str, Any]) -> tuple[str | None, dict[str, Any]]:
    """The definition name and schema of a ``$ref`` (through ``anyOf [X, null]``), or (None, schema)."""
    options = [s for s in schema.get("anyOf", [schema]) if s.get("type") != "null"]
    if len(options) == 1 and "$ref" in options[0]:
        name = options[0]["$ref"].rsplit("/", 1)[-1]
        return name, defs[name]
    return None, schema


def _bounds(schema: dict[str, Any]) -> str:
    words = {
        "exclusiveMinimum": "> {}",
        "minimum": "≥ {}",
        "exclusiveMaximum": "< {}",
        "maximum": "≤ {}",
        "minItems": "at least {} item(s)",
        "minLength": "at least {} characters",
    }
    return ", ".join(text.format(schema[key]) for key, text in words.items() if key in schema)


def _type_text(schema: dict[str, Any], defs: dict[str, Any]) -> str:
    if "anyOf" in schema:
        options = [s for s in schema["anyOf"] if s.get("type") != "null"]
        return " or ".join(_type_text(option, defs) for option in options)
    if "$ref" in schema:
        return "mapping (fields below)"
    if "enum" in schema:
        return "one of " + ", ".join(f"`{value}`" for value in schema["enum"])
    kinds = schema.get("type", "")
    kind = next((k for k in kinds if k != "null"), "") if isinstance(kinds, list) else kinds
    if schema.get("pattern") == SECRET_PATTERN:
        text = "secret reference (`env:VAR` or `file:PATH`)"
    elif kind == "array":
        text = "list of " + _type_text(schema.get("items", {}), defs).replace("mapping ", "mappings ", 1)
    elif kind == "object" and "patternProperties" in schema:
        values = next(iter(schema["patternProperties"].values()))
        text = "mapping of header names to " + _type_text(values, defs)
    elif kind == "object":
        text = "mapping of names to " + _type_text(schema.get("additionalProperties", {}), defs)
    elif kind == "string":
        formats = {"uri": "URL", "date": "date (YYYY-MM-DD)", "date-time": "date and time (ISO 8601)"}
        text = formats.get(schema.get("format", ""), "header name" if "pattern" in schema else "text")
    else:
        text = {"integer": "whole number", "number": "number", "boolean": "true or false"}.get(kind, "any value")
    bounds = _bounds(schema)
    return f"{text} ({bounds})" if bounds else text


def _default_text(name: str, schema: dict[str, Any], required: list[str]) -> str:
    if name in required:
        return "**required**"
    if "default" in schema:
        value = schema["default"]
        return "—" if value is None else f"`{json.dumps(value, ensure_ascii=False)}`"
    return {"array": "`[]`", "object": "`{}`"}.get(str(schema.get("type")), "its fields' defaults")


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|").replace("<", "&lt;")


def markdown() -> str:
    """The field reference of a params file (``params/README.md``): every field, its type, default and meaning."""
    schema = json_schema()
    defs = schema.get("$defs", {})
    sections: list[tuple[str | None, dict[str, Any], list[str]]] = [(None, schema, [])]
    used_at: dict[str, list[str]] = {}  # definition -> the paths it appears at

    def walk(model: dict[str, Any], prefix: str) -> None:  # depth first: a mapping's section follows its parent's
        for name, field in model.get("properties", {}).items():
            item = field.get("items", {}) if field.get("type") == "array" else field
            ref, definition = _resolve(item, defs)
            if ref is None:
                continue
            path = prefix + name + ("[]" if item is not field else "")
            if ref not in used_at:
                used_at[ref] = []
                sections.append((ref, definition, used_at[ref]))
                used_at[ref].append(path)
                walk(definition, path + ".")
            else:
                used_at[ref].append(path)

    walk(schema, "")
    parts = [INTRO]
    for ref, model, paths in sections:
        if ref is None:
            parts.append("## Top level\n")
        else:
            parts.append(f"## {', '.join(f'`{p}`' for p in paths)}\n")
            parts.append(f"{_cell(model.get('description', ref))}\n")
        parts.append("| field | type | default | meaning |\n| --- | --- | --- | --- |")
        required = model.get("required", [])
        for name, field in model.get("properties", {}).items():
            row = [f"`{name}`", _type_text(field, defs), _default_text(name, field, required), field["description"]]
            parts.append("| " + " | ".join(_cell(cell) for cell in row) + " |")
        parts.append("")
    return "\n".join(parts)
