"""Turn ``jsonschema`` errors into one-line problems that name the field and its line.

Shared by the Tekton (CRD) and Kubernetes (kubernetes-validate) checks, so both speak alike:
``unknown field "spec.steps[0].imagee"``, ``spec.params[0].type: expected string, got 5``.
"""

from __future__ import annotations

import re
from typing import Any

import jsonschema

from taskimage.tekton.lint.loader import Document
from taskimage.tekton.lint.problems import Problem, dotted

_JSON_TYPES = {
    dict: "object",
    list: "array",
    str: "string",
    bool: "boolean",
    int: "integer",
    float: "number",
    type(None): "null",
}


def _type_name(value: Any) -> str:
    return _JSON_TYPES.get(type(value), type(value).__name__)


def _extras(error: jsonschema.ValidationError) -> list[str]:
    instance = error.instance if isinstance(error.instance, dict) else {}
    props = set((error.schema or {}).get("properties", {}) if isinstance(error.schema, dict) else ())
    patterns = [
        re.compile(p)
        for p in ((error.schema or {}).get("patternProperties", {}) if isinstance(error.schema, dict) else {})
    ]
    return [k for k in instance if k not in props and not any(p.search(str(k)) for p in patterns)]


def describe(error: jsonschema.ValidationError, doc: Document, base: tuple = ()) -> list[Problem]:
    """Problems for one schema error; ``base`` prefixes the path when a sub-document was validated."""
    path = base + tuple(error.absolute_path)
    kind, name = doc.kind, doc.name
    out: list[Problem] = []
    if error.validator == "additionalProperties" and error.validator_value is False:
        for key in _extras(error) or ["?"]:
            out.append(
                Problem(
                    doc.file, doc.line(path + (key,), key=True), kind, name, f'unknown field "{dotted(path + (key,))}"'
                )
            )
        return out
    where = dotted(path)
    if error.validator == "required":
        missing = re.match(r"'(.*)' is a required property", error.message)
        field = missing.group(1) if missing else error.message
        message = f'missing required field "{dotted(path + (field,))}"'
    elif error.validator == "type":
        expected = error.validator_value
        expected = " or ".join(expected) if isinstance(expected, list) else expected
        message = f"{where}: expected {expected}, got {_type_name(error.instance)} {_short(error.instance)}"
    elif error.validator == "enum":
        message = f"{where}: {_short(error.instance)} is not one of {', '.join(map(str, error.validator_value))}"
    elif error.validator in ("anyOf", "oneOf") and _int_or_string(error.validator_value):
        message = f"{where}: expected integer or string, got {_type_name(error.instance)} {_short(error.instance)}"
    else:
        message = f"{where}: {_short(error.message, 160)}"
    out.append(Problem(doc.file, doc.line(path), kind, name, message))
    return out


def _int_or_string(options: Any) -> bool:
    return isinstance(options, list) and sorted(o.get("type", "") for o in options if isinstance(o, dict)) == [
        "integer",
        "string",
    ]


def _short(value: Any, limit: int = 60) -> str:
    text = value if isinstance(value, str) and limit > 60 else repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
