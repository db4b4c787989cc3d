"""A matrixed pipeline task fanned out into combinations, as Tekton's ``Matrix.FanOut`` does
(tektoncd/pipeline pkg/apis/pipeline/v1/matrix_types.go):

- ``matrix.params``: every combination; the *first* param varies fastest (Tekton distributes each
  further param's values over the combinations made so far);
- ``matrix.include``, in order: an entry is laid over every combination whose values agree with
  it on every name they share (an entry sharing no name is laid over all of them); then an entry
  becomes a combination of its own when no combination shares any of its name=value pairs;
- only ``include``: one combination per entry.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from taskimage.errors import UsageError

MAX_COMBINATIONS = 256  # Tekton's default default-max-matrix-combinations-count

Combination = dict[str, str]


def fan_out(
    params: Sequence[tuple[str, list[str]]], include: Sequence[Mapping[str, str]], where: str
) -> list[Combination]:
    includes = [dict(i) for i in include]
    if not params:
        return includes
    combos: list[Combination] = [{params[0][0]: v} for v in params[0][1]]
    for name, values in params[1:]:
        combos = [{**c, name: v} for v in values for c in combos]
    for inc in includes:  # overwriteCombinations
        for c in combos:
            if all(c[k] == v for k, v in inc.items() if k in c):
                c.update(inc)
    for inc in includes:  # addNewCombinations
        if inc and not any(c.get(k) == v for c in combos for k, v in inc.items() if k in c):
            combos.append(dict(inc))
    if len(combos) > MAX_COMBINATIONS:
        raise UsageError(f"{where}: the matrix makes {len(combos)} combinations, more than Tekton's {MAX_COMBINATIONS}")
    return combos
