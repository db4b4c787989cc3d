"""The order of a Pipeline's tasks: edges from ``runAfter`` and from result references.

Tekton builds the same graph (pkg/apis/pipeline/v1 pipeline_validation, pkg/reconciler/pipeline/dag):
an unknown name in ``runAfter`` or a cycle makes the Pipeline invalid.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from taskimage.errors import UsageError


def build(deps: Mapping[str, Sequence[str]], pipeline: str) -> dict[str, tuple[str, ...]]:
    """``deps`` (task -> the tasks it waits for), checked: every name known, no cycle."""
    out: dict[str, tuple[str, ...]] = {}
    for task, before in deps.items():
        for b in before:
            if b not in deps:
                raise UsageError(
                    f"pipeline {pipeline}: task {task} runs after {b}, which is not a task of the pipeline"
                )
            if b == task:
                raise UsageError(f"pipeline {pipeline}: task {task} depends on itself")
        out[task] = tuple(dict.fromkeys(before))
    cycle = find_cycle(out)
    if cycle:
        raise UsageError(f"pipeline {pipeline}: the tasks form a cycle: {' -> '.join(cycle)}")
    return out


def find_cycle(deps: Mapping[str, Sequence[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1 visiting, 2 done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for d in deps.get(node, ()):
            if state.get(d) == 1:
                return stack[stack.index(d) :] + [d]
            if d not in state:
                found = visit(d)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for n in deps:
        if n not in state:
            found = visit(n)
            if found:
                return found
    return None


def ready(deps: Mapping[str, Sequence[str]], done: set[str], started: set[str]) -> list[str]:
    """Tasks not yet started whose every dependency is done, in declaration order."""
    return [t for t, before in deps.items() if t not in started and all(b in done for b in before)]
