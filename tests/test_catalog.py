"""The catalog, tekton/ and .tekton/ YAML: generated without drift, catlin-clean, valid, and
wired to the real CLI.

Real components: the generator and the real argparse parsers of ``taskimage build`` / ``index``
(a Task's env and args, substituted as Tekton would, must parse back to the param values),
``taskimage lint`` against the Tekton CRDs (../shared/tekton-crds or $TASKIMAGE_CRDS) and
kubernetes-validate, and for the release bundles the local registry.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest
import yaml
from conftest import have_tools, need

from taskimage import cli
from taskimage.build import index, params
from taskimage.tekton import catalog
from taskimage.tekton.lint import lint_paths
from taskimage.tekton.localrun.plan import make_plan
from taskimage.tekton.localrun.task import Loaded

ROOT = Path(__file__).resolve().parent.parent
CRDS = os.environ.get("TASKIMAGE_CRDS") or str(ROOT.parent / "shared" / "tekton-crds")
PLATFORM_RE = re.compile(r"^[a-z0-9]+/[a-z0-9]+$")
DIGEST = "sha256:" + "ab" * 32


def docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def catalog_resources() -> list[tuple[Path, dict]]:
    """Every Task and Pipeline of the catalog: ``catalog/<kind>/<name>/<version>/<name>.yaml``."""
    out = []
    for path in sorted(ROOT.glob("catalog/*/*/*/*.yaml")):
        if path.stem == path.parent.parent.name:
            out += [(path, d) for d in docs(path)]
    return out


def by_name(name: str) -> dict:
    return next(d for p, d in catalog_resources() if d["metadata"]["name"] == name and d["kind"] == "Task")


def pipeline(name: str) -> dict:
    return next(d for p, d in catalog_resources() if d["metadata"]["name"] == name and d["kind"] == "Pipeline")


# --- generation ------------------------------------------------------------------------------


def test_committed_files_match_the_generator():
    diffs = catalog.drift(ROOT)
    assert not diffs, "generated files drifted; run `python -m taskimage.tekton.catalog`:\n" + "".join(diffs)[:4000]
    assert catalog.main(["--root", str(ROOT), "--check"]) == 0


def _copy_generated(tmp_path: Path) -> Path:
    for t in catalog.task_defs():
        dest = tmp_path / t.directory
        dest.mkdir(parents=True)
        shutil.copy(ROOT / t.yaml_path, dest)
        shutil.copy(ROOT / t.readme_path, dest)
    for rel in catalog.INSTALLED:
        for path in (rel, catalog.INSTALL_DATA / rel):
            (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(ROOT / path, tmp_path / path)
    source = tmp_path / catalog.SOURCE_DIR
    source.mkdir(parents=True)
    shutil.copy(ROOT / catalog.SOURCE_DIR / "README.md", source)
    return tmp_path


@pytest.mark.parametrize(
    "edit",
    [
        ("catalog/task/buildah-multiarch/0.1/buildah-multiarch.yaml", "default: auto", "default: vfs"),
        ("catalog/task/buildah-multiarch/0.1/README.md", "| `CACHE_REPO` |", "| `CACHE_REPOSITORY` |"),
        (
            "catalog/task/buildah-multiarch-platform/0.1/buildah-multiarch-platform.yaml",
            "TASKIMAGE_JOBS",
            "TASKIMAGE_JOB",
        ),
        # the copies cluster install applies from the package follow their sources
        ("taskimage/data/cluster/tekton/binfmt-daemonset.yaml", "privileged: true", "privileged: false"),
    ],
)
def test_check_fails_on_any_hand_edit(tmp_path, capsys, edit):
    root = _copy_generated(tmp_path)
    rel, old, new = edit
    path = root / rel
    assert old in path.read_text()
    path.write_text(path.read_text().replace(old, new, 1))
    assert catalog.main(["--root", str(root), "--check"]) == 1
    out = capsys.readouterr().out
    assert f"a/{rel}" in out and "+" in out
    assert catalog.main(["--root", str(root)]) == 0  # rewriting repairs it
    assert catalog.main(["--root", str(root), "--check"]) == 0


def test_readme_without_markers_is_an_error(tmp_path):
    root = _copy_generated(tmp_path)
    readme = root / "catalog/task/buildah-multiarch/0.1/README.md"
    readme.write_text(readme.read_text().replace("<!-- END GENERATED results -->", ""))
    with pytest.raises(ValueError, match="missing the marker pair"):
        catalog.drift(root)


def test_readme_tables_list_every_task_param():
    for t in catalog.task_defs():
        text = (ROOT / t.readme_path).read_text()
        task = by_name(t.name)
        for p in task["spec"]["params"]:
            assert f"| `{p['name']}` |" in text, f"{t.readme_path}: no row for {p['name']}"
        for r in task["spec"]["results"]:
            assert f"| `{r['name']}` |" in text
        for w in task["spec"]["workspaces"]:
            assert f"| `{w['name']}` |" in text


# --- catlin rules ----------------------------------------------------------------------------


@pytest.mark.parametrize("path, doc", catalog_resources(), ids=lambda v: v.name if isinstance(v, Path) else "")
def test_catlin_metadata(path, doc):
    version = path.parent.name
    meta = doc["metadata"]
    assert doc["apiVersion"] == "tekton.dev/v1"
    assert meta["name"] == path.stem
    assert meta["labels"]["app.kubernetes.io/version"] == version
    ann = meta["annotations"]
    assert re.fullmatch(r"\d+\.\d+\.\d+", ann["tekton.dev/pipelines.minVersion"])
    assert ann["tekton.dev/categories"] == "Image Build"
    assert ann["tekton.dev/tags"] and ann["tekton.dev/displayName"]
    platforms = ann["tekton.dev/platforms"].split(",")
    assert platforms and all(PLATFORM_RE.match(p) for p in platforms), platforms
    assert doc["spec"]["description"].strip()
    for p in doc["spec"]["params"]:
        assert p.get("description", "").strip(), f"param {p['name']} has no description"


def _steps(task_spec: dict) -> list[dict]:
    return list(task_spec.get("steps") or []) + list(task_spec.get("sidecars") or [])


def _all_task_specs() -> list[tuple[str, dict]]:
    """Task specs of every YAML we ship: catalog Tasks and inline taskSpecs anywhere."""
    found = []

    def walk(node, where):
        if isinstance(node, dict):
            if "steps" in node and isinstance(node["steps"], list):
                found.append((where, node))
            for v in node.values():
                walk(v, where)
        elif isinstance(node, list):
            for v in node:
                walk(v, where)

    for folder in ("catalog", "tekton", ".tekton", "examples/pac"):
        for path in sorted((ROOT / folder).rglob("*.yaml")):
            for d in docs(path):
                walk(d, str(path.relative_to(ROOT)))
    return found


def test_no_latest_images_and_no_params_in_scripts():
    specs = _all_task_specs()
    assert len(specs) >= 8
    for where, spec in specs:
        for step in _steps(spec):
            image = step["image"]
            assert not image.endswith(":latest"), f"{where}: {image}"
            assert "$(params." in image or "@sha256:" in image, f"{where}: step image not pinned by digest: {image}"
            assert "$(params." not in step.get("script", ""), f"{where}: $(params...) pasted into a script"


def test_no_free_form_extra_args():
    for t in catalog.task_defs():
        names = {p["name"] for p in by_name(t.name)["spec"]["params"]}
        assert not {n for n in names if "EXTRA" in n}, names


def test_builder_image_is_pinned_and_marked_unreleased():
    for t in catalog.task_defs():
        default = next(p for p in by_name(t.name)["spec"]["params"] if p["name"] == "BUILDER_IMAGE")["default"]
        assert default == catalog.RELEASE_IMAGE
        assert catalog.DIGEST_RE.match(default)


# --- params one-to-one with the CLI ----------------------------------------------------------

SAMPLE = {
    "IMAGE": "reg.example/team/app:v1",
    "CONTEXT": "sub/dir",
    "SOURCE_ARTIFACT": f"reg.example/team/app@sha256:{'ef' * 32}",
    "DOCKERFILE": "Dockerfile.alt",
    "TARGET": "final",
    "FORMAT": "docker",
    "TLSVERIFY": "false",
    "STORAGE_DRIVER": "vfs",
    "SKIP_PUSH": "true",
    "CACHE_REPO": "reg.example/team/cache",
    "EXPIRES_AFTER": "5d",
    "RETRY": "5",
    "RETRY_DELAY": "7",
    "JOBS": "2",
    "EVICT": "false",
    "SBOM": "cyclonedx",
    "PROVENANCE": "false",
    "PLATFORMS": ["linux/amd64", "linux/arm64", "linux/arm/v7"],
    "BUILD_ARGS": ["A=1", "B=two words"],
    "LABELS": ["org.example=x"],
    "ANNOTATIONS": [],
    "SECRETS": ["npmrc", "id=pip,src=pip.conf"],
    "ADDITIONAL_TAGS": ["1.2", "latest"],
    "SOURCE_DATE_EPOCH": "1700000000",
    "SSH": ["default=id_ed25519"],
    "REPOSITORY": "reg.example/team/app",
    "PLATFORM": "arm64",
    "IMAGE_REFS": [f"reg.example/team/app@{DIGEST}", f"reg.example/team/app@sha256:{'cd' * 32}"],
}
BOUND_WORKSPACES = ("source", "dockerconfig", "build-secrets", "ssh-directory")  # sslcertdir (optional) stays unbound


def _tekton_invocation(task: dict, run_name: str = "app-build-1") -> tuple[list[str], dict[str, str]]:
    """The step's argv and env after substitution of SAMPLE values by `taskimage run`'s planner
    (the product's Tekton substitution), in a TaskRun binding source and dockerconfig only."""
    declared = {p["name"] for p in task["spec"]["params"]}
    taskrun = {
        "apiVersion": "tekton.dev/v1",
        "kind": "TaskRun",
        "metadata": {"name": run_name},
        "spec": {
            "params": [{"name": k, "value": v} for k, v in SAMPLE.items() if k in declared],
            "workspaces": [{"name": w, "emptyDir": {}} for w in BOUND_WORKSPACES],
        },
    }
    plan = make_plan(Loaded(task["metadata"]["name"], task["spec"], taskrun))
    (step,) = plan.steps
    assert step.command == ("taskimage",)
    return list(step.args), dict(step.env)


def _parse(argv: list[str]):
    parser = cli.build_parser()
    return parser.parse_args(argv)


def test_build_task_params_are_exactly_the_build_flags():
    task = by_name("buildah-multiarch")
    names = [p["name"] for p in task["spec"]["params"]]
    assert names == [p.name for p in params.BUILD_PARAMS if p.in_task] + ["BUILDER_IMAGE"]
    flags = {a.dest for a in cli.build_parser()._subparsers._group_actions[0].choices["build"]._actions}
    for p in params.BUILD_PARAMS:
        assert p.dest in flags, f"{p.name}: no flag in `taskimage build`"
    # Every CLI-only flag is either bound to a workspace or meaningless in a pod.
    cli_only = {p.name for p in params.BUILD_PARAMS if not p.in_task}
    assert cli_only == {
        "SOURCE_ROOT",
        "AUTHFILE",
        "CERT_DIR",
        "SECRETS_ROOT",
        "SSH_ROOT",
        "CREDS",
        "ROOT",
        "RUNROOT",
        "RESULTS_DIR",
    }


def test_build_task_values_reach_the_cli_unchanged():
    task = by_name("buildah-multiarch")
    argv, env = _tekton_invocation(task)
    assert argv[0] == "build"
    values = params.resolve(_parse(argv), env=env)
    for p in params.BUILD_PARAMS:
        if not p.in_task:
            continue
        got = values[p.name][0]
        want = SAMPLE[p.name]
        if p.type == "bool":
            want = want == "true"
        elif p.type == "int":
            want = int(want)
        assert got == want, p.name
    assert values["SOURCE_ROOT"][0] == "/workspace/source"
    assert values["AUTHFILE"][0] == "/workspace/dockerconfig"
    assert values["CERT_DIR"][0] == ""  # unbound optional workspace: empty, i.e. unset


def test_platform_task_builds_one_platform_to_a_per_run_tag():
    task = by_name("buildah-multiarch-platform")
    spec = {p["name"]: p for p in task["spec"]["params"]}
    assert spec["PLATFORM"]["type"] == "string"  # a matrix substitutes string params only
    assert "PLATFORMS" not in spec and "IMAGE" not in spec
    argv, env = _tekton_invocation(task, run_name="run-abc-build-1")
    values = params.resolve(_parse(argv), env=env)
    assert values["PLATFORMS"][0] == ["arm64"]
    assert values["IMAGE"][0] == "reg.example/team/app:run-abc-build-1"
    assert values["BUILD_ARGS"][0] == SAMPLE["BUILD_ARGS"]
    others = {p.name for p in params.BUILD_PARAMS if p.in_task} - {"IMAGE", "PLATFORMS", "ADDITIONAL_TAGS"}
    assert others <= set(spec)


def test_index_task_values_reach_the_cli_unchanged():
    task = by_name("buildah-multiarch-index")
    argv, env = _tekton_invocation(task)
    args = _parse(argv)
    args.refs = list(args.refs or []) + list(args.positional_refs or [])
    values = params.resolve(args, params=index.PARAMS, env=env)
    assert values["IMAGE"][0] == SAMPLE["IMAGE"]
    assert values["REFS"][0] == SAMPLE["IMAGE_REFS"]
    assert values["TLSVERIFY"][0] is False
    assert values["AUTHFILE"][0] == "/workspace/dockerconfig"
    sc = task["spec"]["steps"][0]["securityContext"]
    assert sc["runAsNonRoot"] and sc["capabilities"]["drop"] == ["ALL"]


def test_build_asks_for_sys_admin_but_not_privileged():
    for name in ("buildah-multiarch", "buildah-multiarch-platform"):
        sc = by_name(name)["spec"]["steps"][0]["securityContext"]
        assert sc["capabilities"]["add"] == ["SYS_ADMIN"]
        assert "privileged" not in sc
        ws = {w["name"]: w for w in by_name(name)["spec"]["workspaces"]}
        assert ws["storage"]["mountPath"] == "/var/lib/containers" and ws["storage"]["optional"]
        assert ws["dockerconfig"]["readOnly"] and ws["sslcertdir"]["readOnly"]
    readme = (ROOT / "catalog/task/buildah-multiarch/0.1/README.md").read_text()
    for word in ("## Privileges", "SYS_ADMIN", "runAsUser: 0", "AppArmor", "binfmt_misc"):
        assert word in readme


# --- Pipelines ---------------------------------------------------------------------------------


def _task(p: dict, name: str) -> dict:
    return next(t for t in p["spec"]["tasks"] if t["name"] == name)


def test_pipelines_reference_git_clone_and_our_tasks_through_resolvers():
    p = pipeline("buildah-multiarch")
    clone = _task(p, "fetch-source")["taskRef"]
    assert clone["resolver"] == "git"
    rp = {x["name"]: x["value"] for x in clone["params"]}
    assert re.fullmatch(r"[0-9a-f]{40}", rp["revision"]) and rp["pathInRepo"].endswith("git-clone.yaml")
    for name in ("buildah-multiarch", "buildah-multiarch-matrix"):
        for t in pipeline(name)["spec"]["tasks"]:
            if t["taskRef"]["resolver"] != "git":
                ref = t["taskRef"]
                assert ref["resolver"] == "bundles"
                assert {x["name"]: x["value"] for x in ref["params"]}["bundle"] == catalog.RELEASE_TASK_BUNDLE
    seed_like = pipeline("buildah-multiarch")
    plats = next(x for x in seed_like["spec"]["params"] if x["name"] == "PLATFORMS")
    assert plats["default"] == ["linux/amd64", "linux/arm64"]
    subpaths = {w["name"]: w.get("subPath") for w in _task(seed_like, "build")["workspaces"]}
    assert subpaths == {"source": "src", "storage": "containers", "dockerconfig": None, "build-secrets": None}
    # private repositories (issue 15): git-clone gets the optional basic-auth and ssh-directory
    for name in ("buildah-multiarch", "buildah-multiarch-matrix"):
        spec = pipeline(name)["spec"]
        optional = {w["name"] for w in spec["workspaces"] if w.get("optional")}
        assert {"basic-auth", "ssh-directory", "build-secrets"} <= optional
        clone = {w["name"]: w["workspace"] for w in _task(pipeline(name), "fetch-source")["workspaces"]}
        assert clone["basic-auth"] == "basic-auth" and clone["ssh-directory"] == "ssh-directory"
        build = {x["name"]: x["value"] for x in _task(pipeline(name), "build")["params"]}
        assert build["SOURCE_DATE_EPOCH"] == "$(tasks.fetch-source.results.committer-date)"
    build = {x["name"]: x["value"] for x in _task(seed_like, "build")["params"]}
    assert build["ANNOTATIONS"] == [
        "index:org.opencontainers.image.source=$(params.url)",
        "index:org.opencontainers.image.revision=$(tasks.fetch-source.results.commit)",
    ]
    pac = yaml.safe_load((ROOT / "examples/pac/build.yaml").read_text())
    assert {"name": "basic-auth", "secret": {"secretName": "{{ git_auth_secret }}"}} in pac["spec"]["workspaces"]


def test_matrix_pipeline_fans_out_over_string_params_and_joins_string_results():
    p = pipeline("buildah-multiarch-matrix")
    build, idx = _task(p, "build"), _task(p, "index")
    platform_task = by_name("buildah-multiarch-platform")
    types = {x["name"]: x["type"] for x in platform_task["spec"]["params"]}
    for mp in build["matrix"]["params"]:
        assert types[mp["name"]] == "string"  # Tekton's matrix rule
    assert build["matrix"]["params"][0]["value"] == ["$(params.PLATFORMS[*])"]
    refs = next(x for x in idx["params"] if x["name"] == "IMAGE_REFS")["value"]
    assert refs == ["$(tasks.build.results.IMAGES[*])"]
    result_types = {r["name"]: r.get("type", "string") for r in platform_task["spec"]["results"]}
    assert result_types["IMAGES"] == "string"  # only string results of a matrix are aggregated
    image = next(x for x in idx["params"] if x["name"] == "IMAGE")["value"]
    assert image == "$(params.REPOSITORY):$(params.TAG)"


def test_matrix_pipeline_shares_no_volume_the_source_travels_as_an_artifact():
    """Issue 18: no `source` workspace anywhere, the builds take the artifact by digest."""
    p = pipeline("buildah-multiarch-matrix")
    assert "source" not in {w["name"] for w in p["spec"]["workspaces"]}
    fetch, build = _task(p, "fetch-source"), _task(p, "build")
    assert {x["name"]: x["value"] for x in fetch["taskRef"]["params"]}["name"] == catalog.SOURCE_TASK
    given = {x["name"]: x["value"] for x in build["params"]}
    assert given["SOURCE_ARTIFACT"] == "$(tasks.fetch-source.results.SOURCE_ARTIFACT)"
    assert "source" not in {w["name"] for w in build["workspaces"]}
    source_task = yaml.safe_load((ROOT / catalog.SOURCE_DIR / f"{catalog.SOURCE_TASK}.yaml").read_text())
    assert "SOURCE_ARTIFACT" in {r["name"] for r in source_task["spec"]["results"]}
    assert {v["name"]: v for v in source_task["spec"]["volumes"]}["source"] == {"name": "source", "emptyDir": {}}
    for run in (
        ROOT / "tekton/pipelinerun-matrix.yaml",
        ROOT / "catalog/pipeline/buildah-multiarch-matrix/0.1/tests/run.yaml",
    ):
        bound = docs(run)[0]["spec"].get("workspaces") or []
        assert all(set(w) <= {"name", "emptyDir", "secret"} for w in bound), bound  # emptyDir only, no PVC


def test_matrix_example_selects_nodes_by_the_matrix_param():
    run = docs(ROOT / "tekton/pipelinerun-matrix.yaml")[0]
    spec = run["spec"]["taskRunSpecs"][0]
    assert spec["pipelineTaskName"] == "build"
    assert spec["podTemplate"]["nodeSelector"] == {"kubernetes.io/arch": "$(params.PLATFORM)"}
    defaults = next(x for x in pipeline("buildah-multiarch-matrix")["spec"]["params"] if x["name"] == "PLATFORMS")
    assert all("/" not in v for v in defaults["default"])  # valid label values


# --- cluster resources, Pipelines-as-Code ------------------------------------------------------


def test_binfmt_daemonset():
    ns, ds = docs(ROOT / "tekton/binfmt-daemonset.yaml")
    assert ns["kind"] == "Namespace" and ds["kind"] == "DaemonSet"
    pod = ds["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert c["command"] == ["taskimage", "binfmt", "install", "--keep-running"]
    assert catalog.DIGEST_RE.match(c["image"])
    assert c["securityContext"] == {"privileged": True}
    assert not pod.get("hostPID") and not pod.get("hostNetwork")
    assert pod["nodeSelector"] == {"kubernetes.io/os": "linux"}
    assert {"operator": "Exists"} in pod["tolerations"]
    assert c["resources"]["limits"]["memory"] and c["resources"]["requests"]["cpu"]


@pytest.mark.parametrize("name, event", [("pull-request.yaml", "[pull_request]"), ("push.yaml", "[push]")])
def test_pac_runs_build_this_repo_with_our_pipeline_from_a_bundle(name, event):
    (run,) = docs(ROOT / ".tekton" / name)
    ann = run["metadata"]["annotations"]
    assert ann["pipelinesascode.tekton.dev/on-event"] == event
    assert ann["pipelinesascode.tekton.dev/on-target-branch"] == "[main]"
    assert int(ann["pipelinesascode.tekton.dev/max-keep-runs"]) > 0
    ref = run["spec"]["pipelineRef"]
    assert ref["resolver"] == "bundles"
    rp = {x["name"]: x["value"] for x in ref["params"]}
    assert rp == {"bundle": catalog.RELEASE_PIPELINE_BUNDLE, "name": "buildah-multiarch", "kind": "pipeline"}
    p = {x["name"]: x["value"] for x in run["spec"]["params"]}
    assert p["IMAGE"].endswith(":{{ revision }}") and p["revision"] == "{{ revision }}"
    assert p["PLATFORMS"] == ["linux/amd64", "linux/arm64"]


def test_every_pac_file_has_its_annotations():
    files = sorted((ROOT / ".tekton").glob("*.yaml")) + sorted((ROOT / "examples/pac").glob("*.yaml"))
    assert len(files) >= 4
    for f in files:
        for run in docs(f):
            ann = run["metadata"]["annotations"]
            for key in ("on-event", "on-target-branch", "max-keep-runs"):
                assert f"pipelinesascode.tekton.dev/{key}" in ann, f"{f.name}: no {key}"


# --- validation ------------------------------------------------------------------------------


def test_all_shipped_yaml_passes_lint():
    need(Path(CRDS, "300-task.yaml").is_file(), f"Tekton CRDs not found in {CRDS} (set TASKIMAGE_CRDS)")
    paths = [str(ROOT / d) for d in ("catalog", "tekton", ".tekton", "examples/pac")]
    report = lint_paths(paths, crds=CRDS)
    problems = [str(p) for p in report.problems]
    assert report.errors == 0 and not problems, "\n".join(problems)
    assert report.documents >= 30


def test_release_rendering_pins_image_and_task_bundle(tmp_path):
    image = f"ghcr.io/taskimage/taskimage@{DIGEST}"
    tasks_bundle = f"ghcr.io/taskimage/tasks@{DIGEST}"
    (tasks,) = catalog.release_tasks(tmp_path / "t", image)
    (pipes,) = catalog.release_pipelines(ROOT, tmp_path / "p", tasks_bundle, image)
    t_docs, p_docs = docs(tasks), docs(pipes)
    assert sorted(d["metadata"]["name"] for d in t_docs) == sorted(
        [t.name for t in catalog.task_defs()] + [catalog.SOURCE_TASK]
    )
    assert {d["metadata"]["name"] for d in p_docs} == {"buildah-multiarch", "buildah-multiarch-matrix"}
    for d in t_docs:
        assert next(p for p in d["spec"]["params"] if p["name"] == "BUILDER_IMAGE")["default"] == image
    text = pipes.read_text()
    assert catalog.UNRELEASED_DIGEST not in text + tasks.read_text()
    assert catalog.RELEASE_TASK_BUNDLE not in text and text.count(tasks_bundle) == 4
    with pytest.raises(ValueError, match="--builder-image"):
        catalog.release_tasks(tmp_path / "x", "ghcr.io/taskimage/taskimage:v1")
    assert catalog.main(["--release-dir", str(tmp_path / "y"), "--builder-image", "nope"]) == 2
    if Path(CRDS, "300-task.yaml").is_file():
        report = lint_paths([str(tasks), str(pipes)], crds=CRDS)
        assert report.errors == 0, [str(p) for p in report.problems]


@pytest.mark.tools
def test_released_bundles_push_and_resolve(registry, tmp_path, capsys):
    need(have_tools("skopeo"), "skopeo is needed")
    image = f"ghcr.io/taskimage/taskimage@{DIGEST}"
    (tasks,) = catalog.release_tasks(tmp_path, image)
    ref = f"{registry.host}/catalog/tasks:test"
    digestfile = tmp_path / "digest"
    assert cli.main(["bundle", "push", ref, str(tasks), "--tls-verify=false", "--digestfile", str(digestfile)]) == 0
    digest = digestfile.read_text()
    assert catalog.DIGEST_RE.match(f"x@{digest}")
    (pipes,) = catalog.release_pipelines(ROOT, tmp_path / "p", f"{registry.host}/catalog/tasks@{digest}", image)
    assert (
        cli.main(["bundle", "push", f"{registry.host}/catalog/pipelines:test", str(pipes), "--tls-verify=false"]) == 0
    )
    capsys.readouterr()
    assert cli.main(["bundle", "list", f"{registry.host}/catalog/tasks@{digest}", "--tls-verify=false"]) == 0
    listing = capsys.readouterr().out
    for t in catalog.task_defs():
        assert t.name in listing


def test_all_shipped_yaml_passes_tekton_lint():
    from taskimage.tekton.lint.tektonlint import find_tekton_lint, run_tekton_lint

    exe = find_tekton_lint()
    need(
        bool(exe) and Path(exe).exists() if exe else False,
        "tekton-lint not found (npm @ibm/tekton-lint; set TEKTON_LINT)",
    )
    files = [
        str(p) for d in ("catalog", "tekton", ".tekton", "examples/pac") for p in sorted((ROOT / d).rglob("*.yaml"))
    ]
    _, found = run_tekton_lint(files, exe)
    errors = [f for f in found if f.get("level") == "error"]
    assert not errors, errors


def test_release_run_steps_are_real_commands(tmp_path):
    """.tekton/release.yaml's steps, with Tekton's values substituted, run the generator and
    parse as `taskimage bundle push` invocations."""
    (run,) = docs(ROOT / ".tekton/release.yaml")
    tasks = {t["name"]: t for t in run["spec"]["pipelineSpec"]["tasks"]}
    image = f"ghcr.io/taskimage/taskimage@{DIGEST}"
    values = {"TASKIMAGE": image, "REVISION": "0123abc", "TASKS_BUNDLE": f"ghcr.io/taskimage/tasks@{DIGEST}"}
    out = tmp_path / "release"

    def subst(arg: str) -> str:
        arg = arg.replace("/workspace/release", str(out)).replace("$(workspaces.source.path)", str(ROOT))
        arg = arg.replace("$(results.DIGEST.path)", str(tmp_path / "digest"))
        return re.sub(r"\$\(params\.([A-Z_]+)\)", lambda m: values[m.group(1)], arg)

    for name, produced in (("release-tasks", "tasks.yaml"), ("release-pipelines", "pipelines.yaml")):
        render, push = tasks[name]["taskSpec"]["steps"]
        assert render["command"] == ["python3", "-m", "taskimage.tekton.catalog"]
        assert catalog.main([subst(a) for a in render["args"]]) == 0
        assert (out / produced).is_file()
        assert push["command"] == ["taskimage"]
        args = cli.build_parser().parse_args([subst(a) for a in push["args"]])
        assert args.files == [str(out / produced)] and args.digestfile == str(tmp_path / "digest")
        assert args.ref.endswith(":0123abc")
    assert f"ghcr.io/taskimage/tasks@{DIGEST}" in (out / "pipelines.yaml").read_text()


# --- the fan-out flow, run for real (taskimage run: each step in podman) ------------------------


@pytest.mark.podman
@pytest.mark.emulation
def test_platform_tasks_then_index_make_one_list(task_image, registry, busybox_base, tmp_path):
    """What the matrix Pipeline does, one TaskRun after the other: each platform Task pushes to a
    per-run tag and gives its image by digest; the index Task (non-root, no capabilities) joins them."""
    from conftest import emulation_ready, skopeo_raw

    need(have_tools("podman", "runc", "skopeo"), "podman, runc and skopeo are needed")
    ok, reason = emulation_ready(["linux/arm64"])
    need(ok, reason)
    source = tmp_path / "source"
    source.mkdir()
    (source / "Containerfile").write_text(f"FROM {busybox_base}\nRUN uname -m > /arch\n")
    repo = f"{registry.host}/catalog/fanout"
    common = ["-p", "TLSVERIFY=false", "-p", f"BUILDER_IMAGE={task_image}", "--tls-verify=false"]
    images = {}
    for platform in ("amd64", "arm64"):
        out = tmp_path / f"results-{platform}"
        task = ROOT / "catalog/task/buildah-multiarch-platform/0.1/buildah-multiarch-platform.yaml"
        assert (
            cli.main(
                [
                    "run",
                    str(task),
                    "-w",
                    f"source={source}",
                    "-p",
                    f"REPOSITORY={repo}",
                    "-p",
                    f"PLATFORM={platform}",
                    "--results-dir",
                    str(out),
                    *common,
                ]
            )
            == 0
        )
        url = (out / "IMAGE_URL").read_text()
        assert url.startswith(f"{repo}:buildah-multiarch-platform-")  # the TaskRun's name: a per-run tag
        images[platform] = (out / "IMAGES").read_text()
        assert "," not in images[platform] and images[platform].startswith(f"{repo}@sha256:")
        config = skopeo_raw(images[platform], config=True)
        assert config["architecture"] == platform
    assert len({u for u in images.values()}) == 2
    out = tmp_path / "results-index"
    task = ROOT / "catalog/task/buildah-multiarch-index/0.1/buildah-multiarch-index.yaml"
    assert (
        cli.main(
            [
                "run",
                str(task),
                "-p",
                f"IMAGE={repo}:v1",
                "-p",
                f"IMAGE_REFS={images['amd64']},{images['arm64']}",
                "--results-dir",
                str(out),
                *common,
            ]
        )
        == 0
    )
    digest = (out / "IMAGE_DIGEST").read_text()
    listed = skopeo_raw(f"{repo}@{digest}")
    assert {m["platform"]["architecture"]: f"{repo}@{m['digest']}" for m in listed["manifests"]} == images
    assert skopeo_raw(f"{repo}:v1") == listed
