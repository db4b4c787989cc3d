"""The one ``$(…)`` tokenizer of the Tekton wing: ``lint`` checks what it finds, ``run``
substitutes it.

Tekton's rules (tektoncd/pipeline docs/variables.md and pkg/substitution):

- A reference is ``$(ROOT…)`` where ROOT is a variable root Tekton knows (``params``,
  ``context``, ``workspaces``, ``results``, ``tasks``, ``finally``, ``steps``, ``step``,
  ``credentials``; and the removed PipelineResource roots, so they can be named). Shell's own
  ``$(date)`` is not a reference.
- After the root come segments: ``.name``, ``["name"]`` or ``['name']`` (the bracket forms name
  a param whose name holds dots), ``[i]`` (one array element), ``[*]`` (the whole array; nothing
  may follow it). ``$(params.obj.key)`` is one key of an object param.
- ``$$`` is not an escape for Tekton: the controller replaces ``$(params.x)`` inside
  ``$$(params.x)`` too (only kubelet treats ``$$`` specially, later, in command/args/env).
- A dotted name that holds a dot names the param with that dotted name when one is declared
  (Tekton's replacement table has the key ``params.a.b`` for a param ``a.b``).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Container, Iterator

#: Roots Tekton substitutes in a Task, in the order of the controller's passes.
TASK_PASSES = ("params", "context", "workspaces", "results", "steps", "credentials")
#: Every root that makes ``$(…)`` a Tekton reference rather than shell.
ROOTS = TASK_PASSES + ("tasks", "finally", "step", "resources", "inputs", "outputs")

#: ``$(ROOT…)``: group ``root`` and ``rest`` (what follows the root, parsed by :func:`find_refs`).
CANDIDATE = re.compile(r"\$\((?P<root>" + "|".join(ROOTS) + r")\b(?P<rest>[^()]*)\)")
_BRACKET = re.compile(r"""\[(?:"(?P<dq>[^"]*)"|'(?P<sq>[^']*)'|(?P<idx>\d+)|(?P<star>\*))\]""")
_DOTTED = re.compile(r"\.(?P<name>[^.\[\]]+)")

Segment = str | int


@dataclasses.dataclass(frozen=True)
class Ref:
    """One ``$(…)`` in a string: where it stands and what it names.

    ``segments`` are names (str) and indexes (int) after the root; ``star`` is a trailing
    ``[*]``; ``quoted`` says the first segment was written ``["…"]``/``['…']`` (names a param
    whole). A malformed reference (``$(params)``, ``$(params.x[*].y)``, ``$(params[x])``) has
    ``malformed`` set and no segments."""

    text: str  # "$(params.x[*])"
    start: int
    end: int
    root: str
    segments: tuple[Segment, ...] = ()
    star: bool = False
    quoted: bool = False
    malformed: bool = False

    @property
    def expr(self) -> str:
        """What is inside the parentheses: ``params.x[*]``."""
        return self.text[2:-1]

    def param_name(self, declared: Container[str]) -> tuple[str, tuple[Segment, ...]]:
        """For a ``params`` reference: the param it names and the segments after the name."""
        segs = self.segments
        if not self.quoted:
            for cut in range(len(segs), 1, -1):
                head = segs[:cut]
                if all(isinstance(s, str) for s in head):
                    name = ".".join(str(s) for s in head)
                    if name in declared:
                        return name, segs[cut:]
        return str(segs[0]) if segs else "", segs[1:]


def _segments(rest: str) -> tuple[tuple[Segment, ...], bool, bool] | None:
    """(segments, star, first-quoted) of what follows the root, or None when malformed."""
    segments: list[Segment] = []
    pos, star, quoted = 0, False, False
    while pos < len(rest):
        if star:
            return None  # nothing may follow [*]
        m = _DOTTED.match(rest, pos)
        if m:
            segments.append(m.group("name"))
            pos = m.end()
            continue
        m = _BRACKET.match(rest, pos)
        if not m:
            return None
        if m.group("star"):
            star = True
        elif m.group("idx") is not None:
            if not segments:
                return None  # $(params[0])
            segments.append(int(m.group("idx")))
        else:
            name = m.group("dq") if m.group("dq") is not None else m.group("sq")
            if not name:
                return None
            quoted = quoted or not segments
            segments.append(name)
        pos = m.end()
    if not segments:
        return None  # $(params), $(params[*])
    return tuple(segments), star, quoted


def find_refs(value: str) -> list[Ref]:
    """Every Tekton reference in ``value``, in order, malformed ones included."""
    return list(iter_refs(value))


def iter_refs(value: str) -> Iterator[Ref]:
    for m in CANDIDATE.finditer(value):
        parsed = _segments(m.group("rest"))
        if parsed is None:
            yield Ref(m.group(0), m.start(), m.end(), m.group("root"), malformed=True)
        else:
            segments, star, quoted = parsed
            yield Ref(m.group(0), m.start(), m.end(), m.group("root"), segments, star, quoted)


def whole(value: str) -> Ref | None:
    """The reference when ``value`` is exactly one reference (an isolated ``$(params.A[*])``)."""
    refs = find_refs(value)
    return refs[0] if len(refs) == 1 and refs[0].start == 0 and refs[0].end == len(value) else None


__all__ = ["CANDIDATE", "ROOTS", "TASK_PASSES", "Ref", "Segment", "find_refs", "iter_refs", "whole"]
