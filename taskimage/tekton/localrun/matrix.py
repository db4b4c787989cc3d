"""A matrixed pipeline task fanned out into combinations, as Tekton's ``Matrix.FanOut`` does.

- ``matrix.params``: the cartesian product, the first param varying slowest (Tekton's order);
- ``matrix.include`` entries, in order: an entry none of whose params is a matrix param is added to
  every combination; otherwise it is added to each combination whose values of those params
  match, and when none matches it becomes a combination of its own;
- only ``include``: one combination per entry.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence

from taskimage.errors import UsageError

MAX_COMBINATIONS = 256  # Tekton's default default-max-matrix-combinations-count

Combination = dict[str, str]


def fan_out(
    params: Sequence[tuple[str, list[str]]], include: Sequence[Mapping[str, str]], where: str
) -> list[Combination]:
    names = [n for n, _ in params]
    combos: list[Combination] = []
    if params:
        for values in itertools.product(*(v for _, v in params)):
            combos.append(dict(zip(names, values, strict=True)))
    base = len(combos)
    for entry in include:
        overlap = {k: v for k, v in entry.items() if k in names}
        if not params:
            combos.append(dict(entry))
        elif not overlap:
            for c in combos[:base]:
                c.update(entry)
        else:
            matched = [c for c in combos[:base] if all(c.get(k) == v for k, v in overlap.items())]
            for c in matched:
                c.update({k: v for k, v in entry.items() if k not in overlap})
            if not matched:
                combos.append(dict(entry))
    if len(combos) > MAX_COMBINATIONS:
        raise UsageError(f"{where}: the matrix makes {len(combos)} combinations, more than Tekton's {MAX_COMBINATIONS}")
    return combos
