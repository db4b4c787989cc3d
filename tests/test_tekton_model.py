"""The Tekton v1 model: YAML round trips, tkn-style -p/-w parsing, run status interpretation."""

from __future__ import annotations

import pytest
import yaml

from taskimage.errors import UsageError
from taskimage.tekton import model as tekton
from taskimage.tekton.localrun.plan import make_plan
from taskimage.tekton.localrun.task import Loaded

PIPELINE_YAML = """
apiVersion: tekton.dev/v1
kind: Pipeline
metadata:
  name: buildah-multiarch
  annotations: {tekton.dev/pipelines.minVersion: "0.50.0"}
spec:
  params:
    - {name: IMAGE, type: string, description: where to push}
    - {name: PLATFORMS, type: array, default: [linux/amd64, linux/arm64]}
    - {name: META, type: object, properties: {team: {type: string}}, default: {team: build}}
    - name: CONTEXT
      default: "."
  workspaces:
    - {name: source}
    - {name: dockerconfig, optional: true}
  results:
    - {name: IMAGE_DIGEST, value: $(tasks.build.results.IMAGE_DIGEST)}
  tasks:
    - name: clone
      taskRef: {resolver: hub, params: [{name: name, value: git-clone}]}
    - name: build
      taskRef: {name: buildah-multiarch}
      runAfter: [clone]
  finally:
    - name: notify
      taskRef:
        resolver: bundles
        params: [{name: bundle, value: ghcr.io/x/tasks:0.1}, {name: name, value: buildah-multiarch}, {name: kind, value: task}]
"""


@pytest.fixture
def pipeline() -> tekton.Pipeline:
    (doc,) = tekton.load_documents(PIPELINE_YAML)
    return tekton.Pipeline.from_dict(doc)


def test_load_keeps_types_defaults_and_the_whole_document(pipeline):
    assert [(p.name, p.type, p.default, p.required) for p in pipeline.params] == [
        ("IMAGE", "string", None, True),
        ("PLATFORMS", "array", ["linux/amd64", "linux/arm64"], False),
        ("META", "object", {"team": "build"}, False),
        ("CONTEXT", "string", ".", False),  # type inferred as string when omitted
    ]
    assert [(w.name, w.optional) for w in pipeline.workspaces] == [("source", False), ("dockerconfig", True)]
    assert [t.task_name for t in pipeline.tasks] == [None, "buildah-multiarch", None]  # None: resolved remotely
    # Dumping gives back exactly what was loaded (fields the model does not know included).
    assert yaml.safe_load(tekton.dump_yaml([pipeline])) == yaml.safe_load(PIPELINE_YAML)


def test_only_v1_objects_of_the_right_kind_load():
    with pytest.raises(UsageError, match="apiVersion must be tekton.dev/v1"):
        tekton.from_dict({"apiVersion": "tekton.dev/v1beta1", "kind": "Task", "metadata": {"name": "t"}})
    with pytest.raises(UsageError, match="not a Tekton Task or Pipeline"):
        tekton.from_dict({"apiVersion": "v1", "kind": "ConfigMap"})
    with pytest.raises(UsageError, match=r"^x\.yaml:[12]: YAML syntax error"):
        tekton.load_documents("a: [", "x.yaml")


@pytest.mark.parametrize(
    ("arg", "value"),
    [
        ("IMAGE=registry.example/app:1", "registry.example/app:1"),
        ("IMAGE=a=b,c", "a=b,c"),  # a string keeps commas and '='
        ("IMAGE= spaced ", " spaced "),
        ("PLATFORMS=linux/amd64,linux/arm64/v8", ["linux/amd64", "linux/arm64/v8"]),
        ("PLATFORMS=linux/s390x", ["linux/s390x"]),
        ("PLATFORMS=", []),
        ("PLATFORMS=a, b", ["a", " b"]),  # tkn: array items are not trimmed
        ("META=team:ci,tier:gold", {"team": "ci", "tier": "gold"}),
        ("META=team: ci, tier : gold:x", {"team": "ci", "tier": "gold:x"}),  # tkn: keys and values trimmed
    ],
)
def test_pipeline_start_and_run_read_p_alike(pipeline, arg, value):
    """`pipeline start` (build_pipeline_run) and `run` (make_plan) give one -p the same value."""
    name = arg.split("=", 1)[0]
    given = [arg] if name == "IMAGE" else [arg, "IMAGE=x"]
    run = tekton.build_pipeline_run(pipeline, given, ["name=source,emptyDir="])
    assert {p.name: p.value for p in run.params}[name] == value
    task_spec = {
        "params": pipeline.to_dict()["spec"]["params"],
        "steps": [{"name": "s", "image": "r/busybox:1", "script": "true"}],
    }
    plan = make_plan(Loaded("t", task_spec), cli_params=given, cli_workspaces=[])
    assert plan.params[name] == value


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["IMAGE"], "-p IMAGE: expected NAME=VALUE"),
        (
            ["NOPE=1"],
            "-p NOPE: Pipeline buildah-multiarch declares no param NOPE (declared: CONTEXT, IMAGE, META, PLATFORMS)",
        ),
        (["META=team"], '-p META=team: object params take "key1:value1, key2:value2"'),
        (["META="], '-p META=: object params take "key1:value1, key2:value2"'),
        (["IMAGE=a", "IMAGE=b"], "-p IMAGE: given twice"),
    ],
)
def test_bad_params_name_the_flag(pipeline, args, message):
    with pytest.raises(UsageError) as info:
        tekton.build_pipeline_run(pipeline, args, ["name=source,emptyDir="])
    assert str(info.value) == message


@pytest.mark.parametrize(
    ("arg", "binding"),
    [
        (
            "name=source,claimName=pvc1,subPath=src",
            {"name": "source", "subPath": "src", "persistentVolumeClaim": {"claimName": "pvc1"}},
        ),
        (
            "name=source,claimSize=1Gi",
            {
                "name": "source",
                "volumeClaimTemplate": {
                    "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}
                },
            },
        ),
        (
            "name=source,claimSize=500Mi,storageClass=fast,accessMode=ReadWriteMany",
            {
                "name": "source",
                "volumeClaimTemplate": {
                    "spec": {
                        "accessModes": ["ReadWriteMany"],
                        "resources": {"requests": {"storage": "500Mi"}},
                        "storageClassName": "fast",
                    }
                },
            },
        ),
        ("name=x,emptyDir=", {"name": "x", "emptyDir": {}}),
        ("name=x,emptyDir=Memory", {"name": "x", "emptyDir": {"medium": "Memory"}}),
        ("name=x,secret=regcred", {"name": "x", "secret": {"secretName": "regcred"}}),
        (
            "name=x,config=cm,item=ca.crt=certs/ca.crt",
            {"name": "x", "configMap": {"name": "cm", "items": [{"key": "ca.crt", "path": "certs/ca.crt"}]}},
        ),
    ],
)
def test_workspaces_as_tkn_takes_them(arg, binding):
    assert tekton.parse_workspace(arg).to_dict() == binding


def test_workspace_from_files(tmp_path):
    (tmp_path / "pvc.yaml").write_text("spec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 2Gi}}}\n")
    ws = tekton.parse_workspace("name=source,volumeClaimTemplateFile=pvc.yaml", tmp_path)
    assert ws.to_dict()["volumeClaimTemplate"]["spec"]["resources"]["requests"]["storage"] == "2Gi"
    with pytest.raises(UsageError, match="cannot read"):
        tekton.parse_workspace("name=source,volumeClaimTemplateFile=missing.yaml", tmp_path)


@pytest.mark.parametrize(
    ("arg", "message"),
    [
        ("claimName=pvc", "name= is required"),
        ("name=s", "give exactly one of"),
        ("name=s,claimName=a,emptyDir=", "give exactly one of .* \\(got claimName, emptyDir\\)"),
        ("name=s,claimSize=lots", "claimSize must be a Kubernetes quantity"),
        ("name=s,claimName=a,item=k=p", "item= only goes with config= or secret="),
        ("name=s,color=blue", "unknown key 'color'"),
        ("name=s,secret=", "secret= needs a value"),
    ],
)
def test_bad_workspaces_name_the_flag(arg, message):
    with pytest.raises(UsageError, match=message) as info:
        tekton.parse_workspace(arg)
    assert str(info.value).startswith(f"-w {arg}")


def test_build_pipeline_run_checks_required_params_and_workspaces(pipeline):
    run = tekton.build_pipeline_run(pipeline, ["IMAGE=r/a:1"], ["name=source,emptyDir="], namespace="ci")
    assert run.name.startswith("buildah-multiarch-run-")
    doc = run.to_dict()
    assert doc["spec"]["params"] == [{"name": "IMAGE", "value": "r/a:1"}]  # defaults left to Tekton
    assert doc["spec"]["workspaces"] == [{"name": "source", "emptyDir": {}}]  # optional one not bound
    assert "taskRunTemplate" not in doc["spec"] and "timeouts" not in doc["spec"]
    with pytest.raises(UsageError, match="-p IMAGE: Pipeline buildah-multiarch requires it"):
        tekton.build_pipeline_run(pipeline, [], ["name=source,emptyDir="])
    with pytest.raises(UsageError, match="-p IMAGE: given twice"):
        tekton.build_pipeline_run(pipeline, ["IMAGE=a", "IMAGE=b"], ["name=source,emptyDir="])
    with pytest.raises(UsageError, match="-w name=cache: Pipeline buildah-multiarch has no workspace cache"):
        tekton.build_pipeline_run(pipeline, ["IMAGE=a"], ["name=source,emptyDir=", "name=cache,emptyDir="])
    with pytest.raises(UsageError, match="--timeout 'soon'"):
        tekton.build_pipeline_run(pipeline, ["IMAGE=a"], ["name=source,emptyDir="], timeout="soon")
    with pytest.raises(UsageError, match="--prefix-name 'Bad_Name'"):
        tekton.build_pipeline_run(pipeline, ["IMAGE=a"], ["name=source,emptyDir="], prefix_name="Bad_Name")
    named = tekton.build_pipeline_run(pipeline, ["IMAGE=a"], ["name=source,emptyDir="], prefix_name="nightly")
    assert named.name.startswith("nightly-") and len(named.name) == len("nightly-") + 5


def test_with_bundle_rewrites_every_reference_to_the_task(pipeline):
    bundled = pipeline.with_bundle("reg/t:1", "buildah-multiarch")
    refs = [t.task_ref for t in bundled.tasks]
    assert refs[0] == pipeline.tasks[0].task_ref
    assert (
        refs[1]
        == refs[2]
        == {
            "resolver": "bundles",
            "params": [
                {"name": "bundle", "value": "reg/t:1"},
                {"name": "name", "value": "buildah-multiarch"},
                {"name": "kind", "value": "task"},
            ],
        }
    )
    local, changed = pipeline.with_task_ref("buildah-multiarch")
    assert changed == 2
    assert [t.task_ref for t in local.tasks] == [
        pipeline.tasks[0].task_ref,
        {"name": "buildah-multiarch", "kind": "Task"},
        {"name": "buildah-multiarch", "kind": "Task"},
    ]
    with pytest.raises(UsageError, match="--bundle: Pipeline buildah-multiarch has no task referring to Task other"):
        pipeline.with_bundle("reg/t:1", "other")


def test_status_interpretation():
    run = {
        "kind": "PipelineRun",
        "status": {
            "conditions": [
                {
                    "type": "Succeeded",
                    "status": "False",
                    "reason": "Failed",
                    "message": "Tasks Completed: 2 (Failed: 1)",
                }
            ],
            "childReferences": [
                {"kind": "TaskRun", "name": "r-clone", "pipelineTaskName": "clone"},
                {"kind": "CustomRun", "name": "r-x", "pipelineTaskName": "x"},
                {"kind": "TaskRun", "name": "r-build", "pipelineTaskName": "build"},
            ],
            "results": [
                {"name": "IMAGES", "value": ["a@sha256:1", "b@sha256:2"]},
                {"name": "IMAGE_DIGEST", "value": "sha256:3"},
            ],
        },
    }
    assert tekton.condition(run) == tekton.Condition("False", "Failed", "Tasks Completed: 2 (Failed: 1)")
    assert tekton.condition(run).done and not tekton.condition(run).succeeded
    assert tekton.condition({}) == tekton.Condition("Unknown", "Pending", "")
    assert [c.pipeline_task for c in tekton.child_runs(run)] == ["clone", "build"]
    assert [(r.name, r.text) for r in tekton.run_results(run)] == [
        ("IMAGES", "a@sha256:1,b@sha256:2"),
        ("IMAGE_DIGEST", "sha256:3"),
    ]
    task_run = {
        "status": {
            "steps": [
                {"name": "prepare", "terminated": {"exitCode": 0, "reason": "Completed"}},
                {"name": "build", "terminated": {"exitCode": 3, "reason": "Error"}},
                {"name": "push", "terminated": {"exitCode": 1, "reason": "Error"}},
            ]
        }
    }
    assert tekton.failed_step(task_run) == tekton.StepFailure("build", 3, "Error")
    assert tekton.failed_step({"status": {"steps": [{"name": "a", "running": {}}]}}) is None
