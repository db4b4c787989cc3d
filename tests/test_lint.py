"""``taskimage lint``: good samples pass, each deliberately broken copy fails with its message.

Real components: the Tekton v1.15 CRDs (../shared/tekton-crds or $TASKIMAGE_CRDS), the
kubernetes-validate schemas, and for the second-opinion tests IBM's tekton-lint (npm).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from conftest import need

from taskimage import cli
from taskimage.tekton.lint import CrdSet, lint_paths
from taskimage.tekton.lint.tektonlint import find_tekton_lint, run_tekton_lint

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "tests" / "data" / "lint"
GOOD = DATA / "good"
BAD = DATA / "bad"
CRDS = os.environ.get("TASKIMAGE_CRDS") or str(REPO.parent / "shared" / "tekton-crds")
PROJECT_DIRS = ("catalog", "tekton", ".tekton")


@pytest.fixture(scope="module")
def crds() -> CrdSet:
    need(Path(CRDS, "300-task.yaml").is_file(), f"Tekton CRDs not found in {CRDS} (set TASKIMAGE_CRDS)")
    return CrdSet(CRDS)


def _errors(report) -> list[str]:
    return [str(p) for p in report.problems if p.severity == "error"]


def test_good_samples_pass(crds):
    report = lint_paths([str(GOOD)], crds=crds)
    assert _errors(report) == []
    assert report.documents == 10
    # The one custom kind without a CRD is a warning, and it is the only one.
    assert [p.message for p in report.problems] == [
        "custom kind triggers.tekton.dev/v1beta1 TriggerTemplate not checked (no CRD for it)"
    ]


# (file, line, message fragment, number of errors the file must produce)
BROKEN = [
    ("unknown-field.yaml", 10, 'unknown field "spec.steps[0].imagePullPolicyy"', 1),
    ("wrong-type.yaml", 9, "spec.workspaces[0].optional: expected boolean, got string 'yes'", 1),
    ("undefined-param.yaml", 13, "$(params.IMAGES): param 'IMAGES' is not declared in the Task (declared: IMAGE)", 1),
    ("array-in-string.yaml", 17, "array param 'PLATFORMS' used as a string in spec.steps[0].env[0].value", 1),
    ("star-in-script.yaml", 15, "$(params.PLATFORMS[*]) in script: [*] is allowed only as a whole element", 2),
    ("missing-workspace.yaml", 13, "workspace 'cache' is not declared in the Task (declared: source)", 1),
    (
        "pipeline-missing-workspace.yaml",
        14,
        "binds workspace 'source', which the Pipeline does not declare (declared: shared)",
        1,
    ),
    ("undefined-task-result.yaml", 9, "task 'build' declares no result 'DIGEST' (declared: IMAGE_DIGEST)", 1),
    ("latest-image.yaml", 9, "image 'quay.io/buildah/stable:latest' is tagged :latest", 1),
    (
        "latest-image-param.yaml",
        12,
        "image 'quay.io/buildah/stable:latest' (default of param 'BUILDER_IMAGE') is tagged :latest",
        1,
    ),
    ("invalid-inline-taskspec.yaml", 14, 'unknown field "spec.tasks[0].taskSpec.steps[0].scrpit"', 1),
    ("broken-daemonset.yaml", 13, 'unknown field "spec.template.spec.hostPIDD"', 1),
    ("yaml-syntax.yaml", 10, "YAML syntax error", 1),
    ("missing-name.yaml", 4, "missing metadata.name", 1),
    ("v1beta1-field-in-v1.yaml", 11, 'unknown field "spec.steps[0].resources"', 1),
    ("pipelinerun-inline.yaml", 13, 'unknown field "spec.pipelineSpec.tasks[0].runafter"', 2),
    ("pipelinerun-inline.yaml", 8, "metadata.labels.app.kubernetes.io/version: expected string, got number 0.1", 2),
    ("unknown-core-kind.yaml", 2, "has no kind v1 ServiceAcount", 1),
    ("duplicate-field.yaml", 11, 'duplicate field "spec.steps[0].image"', 1),
]


@pytest.mark.parametrize("name,line,fragment,count", BROKEN, ids=[f"{b[0]}:{b[1]}" for b in BROKEN])
def test_broken_copy_fails_with_its_message(crds, name, line, fragment, count):
    report = lint_paths([str(BAD / name)], crds=crds)
    errors = _errors(report)
    assert len(errors) == count, errors
    assert any(f"{BAD / name}:{line}: " in e and fragment in e for e in errors), errors


def test_every_broken_copy_is_covered():
    assert {p.name for p in BAD.glob("*.yaml")} == {b[0] for b in BROKEN}


def test_cli_output_format_and_exit_codes(crds, capsys):
    assert cli.main(["lint", "--crds", CRDS, str(GOOD)]) == 0
    out, err = capsys.readouterr()
    assert "warning: custom kind" in out and "0 errors, 1 warnings" in err

    assert cli.main(["lint", "--crds", CRDS, str(BAD / "undefined-param.yaml"), str(GOOD / "task.yaml")]) == 1
    out, err = capsys.readouterr()
    assert out.splitlines() == [
        f"{BAD / 'undefined-param.yaml'}:13: Task/bad-undefined-param: $(params.IMAGES): param 'IMAGES' is not declared in the Task (declared: IMAGE)"
    ]
    assert "lint: 2 files, 2 documents: 1 errors, 0 warnings" in err


def test_crds_from_environment(crds, monkeypatch, capsys):
    monkeypatch.setenv("TASKIMAGE_CRDS", CRDS)
    assert cli.main(["lint", str(GOOD / "task.yaml")]) == 0


def test_usage_errors(monkeypatch, capsys, tmp_path):
    monkeypatch.delenv("TASKIMAGE_CRDS", raising=False)
    # Tekton documents and no CRDs: a usage error naming the flag and the variable.
    assert cli.main(["lint", str(GOOD / "task.yaml")]) == 2
    assert "--crds PATH or set TASKIMAGE_CRDS" in capsys.readouterr().err
    assert cli.main(["lint", str(tmp_path / "nope.yaml")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert cli.main(["lint", "--crds", str(tmp_path / "nothing"), str(GOOD)]) == 2
    assert cli.main(["lint", "--crds", str(tmp_path), str(GOOD)]) == 2  # a directory without CRDs
    assert "holds no CustomResourceDefinition" in capsys.readouterr().err
    assert cli.main(["lint", "--kubernetes-version", "1.2", str(GOOD / "cluster.yaml")]) == 2


def test_kubernetes_only_needs_no_crds(monkeypatch):
    monkeypatch.delenv("TASKIMAGE_CRDS", raising=False)
    report = lint_paths([str(GOOD / "cluster.yaml")])
    assert report.documents == 4 and report.errors == 0


def test_directories_are_searched_recursively(crds, tmp_path):
    nested = tmp_path / "a" / "b"
    nested.mkdir(parents=True)
    (nested / "task.yml").write_text((GOOD / "task.yaml").read_text())
    (nested / "notes.txt").write_text("not yaml: [")
    report = lint_paths([str(tmp_path)], crds=crds)
    assert report.files == (str(nested / "task.yml"),) and report.errors == 0


def test_shell_substitution_and_context_are_not_references(crds, tmp_path):
    doc = tmp_path / "t.yaml"
    doc.write_text(
        "apiVersion: tekton.dev/v1\nkind: Task\nmetadata: {name: t}\nspec:\n  steps:\n"
        "    - image: docker.io/library/busybox:1.36\n      script: |\n"
        "        echo $(date) $(context.taskRun.name) $(uname -m)\n"
    )
    assert lint_paths([str(doc)], crds=crds).problems == ()


def test_untagged_image_is_a_warning(crds, tmp_path):
    doc = tmp_path / "t.yaml"
    doc.write_text(
        "apiVersion: tekton.dev/v1\nkind: Task\nmetadata: {name: t}\nspec:\n  steps:\n    - image: busybox\n"
    )
    report = lint_paths([str(doc)], crds=crds)
    assert report.errors == 0 and [p.message for p in report.problems] == [
        "image 'busybox' has no tag (means :latest); pin a version tag or a digest"
    ]


def _project_yaml() -> list[Path]:
    files: list[Path] = []
    for folder in PROJECT_DIRS:
        root = REPO / folder
        if root.is_dir():
            files += sorted(p for p in root.rglob("*") if p.suffix in (".yaml", ".yml") and p.is_file())
    return files


def test_project_yaml_passes(crds):
    files = _project_yaml()
    assert files, f"no YAML found in {', '.join(PROJECT_DIRS)}"
    started = time.monotonic()
    report = lint_paths([str(f) for f in files], crds=crds)
    assert report.documents > 0
    assert _errors(report) == [], "\n".join(_errors(report))
    print(f"{report.summary()} in {time.monotonic() - started:.2f}s")


def test_tekton_lint_second_opinion_finds_undefined_param(crds, capsys):
    exe = find_tekton_lint()
    need(bool(exe), "tekton-lint not installed (npm install --prefix DIR @ibm/tekton-lint; set TEKTON_LINT)")
    bad = BAD / "undefined-param.yaml"
    code, problems = run_tekton_lint([bad], exe)
    assert code != 0
    assert [(p["rule"], p["loc"]["startLine"]) for p in problems if p["level"] == "error"] == [
        ("no-undefined-param", 13)
    ]
    # Through the CLI: both linters' problems, one format, one exit code.
    assert cli.main(["lint", "--crds", CRDS, "--tekton-lint", str(bad)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert (
        f"{bad}:13: tekton-lint/no-undefined-param: Undefined param 'IMAGES' at .spec.steps[0].args[0] in 'bad-undefined-param'"
        in out
    )
    assert any(line.startswith(f"{bad}:13: Task/bad-undefined-param: ") for line in out)


def test_tekton_lint_passes_project_yaml():
    exe = find_tekton_lint()
    need(bool(exe), "tekton-lint not installed (npm install --prefix DIR @ibm/tekton-lint; set TEKTON_LINT)")
    files = _project_yaml()
    assert files, f"no YAML found in {', '.join(PROJECT_DIRS)}"
    code, problems = run_tekton_lint(files, exe)
    errors = [f"{p.get('path')}: {p['rule']}: {p['message']}" for p in problems if p.get("level") == "error"]
    assert code == 0 and errors == [], "\n".join(errors)


def test_crds_from_one_multi_document_file(crds, tmp_path):
    """A release's YAML (or kubectl get crd -o yaml) holds the CRDs among other objects."""
    bundle = tmp_path / "release.yaml"
    parts = ["apiVersion: v1\nkind: Namespace\nmetadata: {name: tekton-pipelines}\n"]
    parts += [p.read_text() for p in sorted(Path(CRDS).glob("300-*.yaml"))]
    bundle.write_text("\n---\n".join(parts))
    report = lint_paths([str(BAD / "invalid-inline-taskspec.yaml")], crds=str(bundle))
    assert [p.message for p in report.problems] == ['unknown field "spec.tasks[0].taskSpec.steps[0].scrpit"']


def test_star_only_as_a_whole_element(crds, tmp_path):
    doc = tmp_path / "p.yaml"
    doc.write_text(
        "apiVersion: tekton.dev/v1\nkind: Pipeline\nmetadata: {name: p}\nspec:\n"
        "  params: [{name: P, type: array}]\n  tasks:\n    - name: t\n      taskRef: {name: x}\n"
        '      params:\n        - name: A\n          value: "x-$(params.P[*])"\n'
    )
    messages = [p.message for p in lint_paths([str(doc)], crds=crds).problems]
    assert messages == [
        "$(params.P[*]) in spec.tasks[0].params[0].value: [*] is allowed only as a whole element of args/command, param values, matrix values or when values"
    ]


def test_finally_results_only_in_pipeline_results(crds, tmp_path):
    doc = tmp_path / "p.yaml"
    doc.write_text(
        "apiVersion: tekton.dev/v1\nkind: Pipeline\nmetadata: {name: f}\nspec:\n"
        "  results: [{name: R, value: $(finally.report.results.OUT)}]\n"
        "  tasks:\n    - name: a\n      taskRef: {name: x}\n      params: [{name: P, value: $(finally.report.results.OUT)}]\n"
        "  finally:\n    - name: report\n      taskSpec:\n        results: [{name: OUT}]\n"
        "        steps: [{image: 'a:1', command: [sh, -c, 'echo > $0', $(results.OUT.path)]}]\n"
    )
    problems = lint_paths([str(doc)], crds=crds).problems
    assert [(p.line, p.message) for p in problems] == [
        (9, "$(finally.report.results.OUT): no pipeline task named 'report' in finally")
    ]


def test_command_module_constants_match_the_package():
    """commands/lint.py repeats three constants to keep start-up fast; they must not drift."""
    from taskimage.commands import lint as command
    from taskimage.tekton import lint
    from taskimage.tekton.lint import kube, tektonlint

    assert (command.CRDS_ENV, command.TEKTON_LINT_ENV, command.DEFAULT_KUBERNETES_VERSION) == (
        lint.CRDS_ENV,
        tektonlint.TEKTON_LINT_ENV,
        kube.DEFAULT_KUBERNETES_VERSION,
    )
