"""``when`` expressions, after substitution: ``input`` ``in``/``notin`` ``values``, or ``cel``.

CEL is evaluated with cel-python (``celpy``) when it is installed, else refused with a clear
message; Tekton itself needs ``enable-cel-in-whenexpression`` for it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from taskimage.errors import UsageError

OPERATORS = ("in", "notin")


def check(expr: Mapping[str, Any], where: str) -> None:
    if "cel" in expr:
        cel_available(where)
        return
    if expr.get("operator") not in OPERATORS:
        raise UsageError(f"{where}: when operator {expr.get('operator')!r}: accepted: in, notin")
    if "input" not in expr or not isinstance(expr.get("values"), list) or not expr["values"]:
        raise UsageError(f"{where}: a when expression needs input, operator and non-empty values")


def cel_available(where: str) -> None:
    try:
        import celpy  # noqa: F401
    except ImportError:
        raise UsageError(
            f"{where}: CEL expression: not supported: install cel-python (pip install cel-python)"
        ) from None


def cel(expression: str, where: str, activation: Mapping[str, Any] | None = None) -> bool:
    cel_available(where)
    import celpy

    env = celpy.Environment()
    try:
        program = env.program(env.compile(expression))
        result = program.evaluate({k: celpy.json_to_cel(v) for k, v in (activation or {}).items()})
    except Exception as exc:  # celpy raises its own error types (CELParseError, CELEvalError)
        raise UsageError(f"{where}: CEL {expression!r}: {str(exc).splitlines()[0]}") from None
    if not isinstance(result, (bool, celpy.celtypes.BoolType)):
        raise UsageError(f"{where}: CEL {expression!r} gives {result!r}, not a boolean")
    return bool(result)


def evaluate(input_value: str, operator: str, values: Sequence[str]) -> bool:
    inside = input_value in values
    return inside if operator == "in" else not inside
