"""The one ``$(…)`` tokenizer (tekton/variables.py), on Tekton's documented spellings, and what
``lint`` and ``run`` make of the same Task through it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml
from conftest import need

from taskimage.errors import UsageError
from taskimage.tekton.lint import lint_paths
from taskimage.tekton.localrun.plan import make_plan
from taskimage.tekton.localrun.task import Loaded
from taskimage.tekton.variables import find_refs, whole

CRDS = os.environ.get("TASKIMAGE_CRDS") or str(Path(__file__).resolve().parents[2] / "shared" / "tekton-crds")

# (text, [(root, segments, star, quoted)]) — spellings from tektoncd/pipeline docs/variables.md
CASES = [
    ("$(params.x)", [("params", ("x",), False, False)]),
    ('$(params["x.y"])', [("params", ("x.y",), False, True)]),
    ("$(params['x.y'])", [("params", ("x.y",), False, True)]),
    ("$(params.a[*])", [("params", ("a",), True, False)]),
    ("$(params['a'][*])", [("params", ("a",), True, True)]),
    ("$(params.a[2])", [("params", ("a", 2), False, False)]),
    ("$(params.obj.key)", [("params", ("obj", "key"), False, False)]),
    ("$(tasks.build.results.IMAGE_REF[*])", [("tasks", ("build", "results", "IMAGE_REF"), True, False)]),
    ("$(context.taskRun.name)", [("context", ("taskRun", "name"), False, False)]),
    ("$(workspaces.source.path)/x", [("workspaces", ("source", "path"), False, False)]),
    ("$$(params.x)", [("params", ("x",), False, False)]),  # $$ is no escape for Tekton
    ("echo $(date) $(uname -m) $(paramsx)", []),  # shell, not Tekton
    ("a=$(params.a) b=$(results.r.path)", [("params", ("a",), False, False), ("results", ("r", "path"), False, False)]),
]


@pytest.mark.parametrize("text,expected", CASES, ids=[c[0] for c in CASES])
def test_tokenizer_reads_tektons_spellings(text, expected):
    refs = find_refs(text)
    assert [(r.root, r.segments, r.star, r.quoted) for r in refs] == expected
    assert all(not r.malformed and text[r.start : r.end] == r.text for r in refs)


@pytest.mark.parametrize("text", ["$(params)", "$(params[*])", "$(params.a[*].b)", "$(params[x])", "$(params-x)"])
def test_malformed_references_are_found_and_marked(text):
    (ref,) = find_refs(text)
    assert ref.malformed and ref.text == text


def test_dotted_names_prefer_a_declared_param_with_dots():
    (ref,) = find_refs("$(params.a.b)")
    assert ref.param_name({"a.b"}) == ("a.b", ())
    assert ref.param_name({"a"}) == ("a", ("b",))
    (quoted,) = find_refs('$(params["a"].b)')
    assert quoted.param_name({"a.b", "a"}) == ("a", ("b",))


def test_whole_is_only_an_isolated_reference():
    assert whole("$(params.a[*])") is not None
    assert whole(" $(params.a[*])") is None and whole("$(params.a)$(params.b)") is None


TASK = """\
apiVersion: tekton.dev/v1
kind: Task
metadata: {name: t}
spec:
  params:
    - {name: some.url, default: "http://x"}
    - {name: flags, type: array, default: ["-a", "-b"]}
  steps:
    - name: s
      image: docker.io/library/busybox:1.36
      args: ["$(params['some.url'])", "$(params.some.url)", "$$(params.some.url)", "$(params.flags[*])"]
"""


def test_lint_and_run_agree_on_the_same_task(tmp_path):
    need(Path(CRDS, "300-task.yaml").is_file(), f"Tekton CRDs not found in {CRDS} (set TASKIMAGE_CRDS)")
    path = tmp_path / "t.yaml"
    path.write_text(TASK)
    assert lint_paths([str(path)], crds=CRDS).problems == ()
    spec = yaml.safe_load(TASK)["spec"]
    plan = make_plan(Loaded("t", spec), cli_params=[], cli_workspaces=[])
    assert tuple(plan.steps[0].args) == ("http://x", "http://x", "$http://x", "-a", "-b")

    broken = TASK.replace("$(params.flags[*])", "$(params.flags[*].x)")
    path.write_text(broken)
    messages = [p.message for p in lint_paths([str(path)], crds=CRDS).problems]
    assert messages == ["$(params.flags[*].x): malformed param reference"]
    with pytest.raises(UsageError, match=r"malformed reference \$\(params\.flags\[\*\]\.x\)"):
        make_plan(Loaded("t", yaml.safe_load(broken)["spec"]), cli_params=[], cli_workspaces=[])


def test_runs_find_refs_is_the_tokenizer_with_malformed_ones_as_text():
    from taskimage.tekton.localrun import substitute

    found = substitute.find_refs("$(params) $(params.a[0]) $(date)")
    assert found[0] == "$(params)"
    assert len(found) == 2 and not isinstance(found[1], str)
    assert (found[1].root, found[1].segments, found[1].start) == ("params", ("a", 0), 10)


def test_runs_old_spelling_reads_through_the_tokenizer():
    from taskimage.tekton.localrun import substitute

    m = substitute._REF.fullmatch("$(params.a[*])")
    assert m is not None and m.group("root") == "params"
    ref = substitute.parse_ref("$(params.a[*])", "params", m.group("rest"))
    assert ref is not None and (ref.segments, ref.star) == (("a",), True)
    assert substitute.parse_ref("$(params.a[*].b)", "params", ".a[*].b") is None
