"""Tekton's substitution rules in `taskimage run`, pure (no containers): cases taken from
tektoncd/pipeline docs/tasks.md and docs/variables.md, and each error with its exact message."""

from __future__ import annotations

import pytest

from taskimage.errors import UsageError
from taskimage.tekton.localrun.plan import make_plan
from taskimage.tekton.localrun.substitute import kube_expand
from taskimage.tekton.localrun.task import Loaded

IMG = "registry.example/busybox:1"


def plan_for(spec: dict, params: dict | None = None, workspaces=(), cli=(), taskrun_meta=None):
    taskrun = None
    if params is not None or taskrun_meta is not None:
        taskrun = {
            "apiVersion": "tekton.dev/v1",
            "kind": "TaskRun",
            "metadata": taskrun_meta or {"name": "tr-1", "namespace": "ns1", "uid": "uid-1"},
            "spec": {"params": [{"name": k, "value": v} for k, v in (params or {}).items()]},
        }
    return make_plan(Loaded("demo", spec, taskrun), cli_params=list(cli), cli_workspaces=list(workspaces))


def one_step(step: dict, **spec) -> dict:
    return {"steps": [{"name": "s", "image": IMG, **step}], **spec}


# (id, task spec, TaskRun params, field to read, expected) — from the Tekton docs' examples
DOC_CASES = [
    (
        "tasks.md: array param expanded in args with [*], string param next to it",
        one_step(
            {"args": ["build", "$(params.flags[*])", "url=$(params.someURL)"]},
            params=[{"name": "flags", "type": "array"}, {"name": "someURL", "type": "string"}],
        ),
        {"flags": ["--set", "arg1=foo", "--randomflag", "--someotherflag"], "someURL": "http://google.com"},
        "args",
        ("build", "--set", "arg1=foo", "--randomflag", "--someotherflag", "url=http://google.com"),
    ),
    (
        "tasks.md: command [first, $(params.array-param[*]), last]",
        one_step(
            {"command": ["first", "$(params.array-param[*])", "last"]},
            params=[{"name": "array-param", "type": "array"}],
        ),
        {"array-param": ["some", "array", "elements"]},
        "command",
        ("first", "some", "array", "elements", "last"),
    ),
    (
        "variables.md: an array param without [*] also expands as a whole element",
        one_step({"args": ["$(params.a)"]}, params=[{"name": "a", "type": "array"}]),
        {"a": ["x", "y"]},
        "args",
        ("x", "y"),
    ),
    (
        "variables.md: params['<name>'][*] and params[\"<name>\"][*]",
        one_step({"args": ["$(params['a'][*])", '$(params["a"][*])']}, params=[{"name": "a", "type": "array"}]),
        {"a": ["x", "y"]},
        "args",
        ("x", "y", "x", "y"),
    ),
    (
        "variables.md: params.<name>[i] is the i-th element, usable inside a string",
        one_step({"args": ["second=$(params.a[1])", "$(params['a'][0])"]}, params=[{"name": "a", "type": "array"}]),
        {"a": ["x", "y"]},
        "args",
        ("second=y", "x"),
    ),
    (
        'tasks.md: $(params["some.other.URL"]) for a name with dots; quotes of both kinds',
        one_step(
            {"args": ['$(params["some.other.URL"])', "$(params['some.other.URL'])", "$(params.some.other.URL)"]},
            params=[{"name": "some.other.URL"}],
        ),
        {"some.other.URL": "http://x"},
        "args",
        ("http://x", "http://x", "http://x"),
    ),
    (
        "variables.md: params.<object-param-name>.<key>",
        one_step(
            {"args": ["$(params.gitrepo.url)@$(params.gitrepo.commit)"]},
            params=[{"name": "gitrepo", "type": "object", "properties": {"url": {}, "commit": {}}}],
        ),
        {"gitrepo": {"url": "https://git.example/r", "commit": "abc"}},
        "args",
        ("https://git.example/r@abc",),
    ),
    (
        "object default keys stay where the TaskRun gives only some",
        one_step(
            {"args": ["$(params.o.a)-$(params.o.b)"]},
            params=[{"name": "o", "type": "object", "properties": {"a": {}, "b": {}}, "default": {"a": "1", "b": "2"}}],
        ),
        {"o": {"b": "9"}},
        "args",
        ("1-9",),
    ),
    (
        "tasks.md: workingDir from a param with a default",
        one_step({"workingDir": "$(params.directory)"}, params=[{"name": "directory", "default": "/workspace"}]),
        {},
        "working_dir",
        "/workspace",
    ),
    (
        "tasks.md: $(workspaces.messages.path) is the declared mountPath",
        one_step(
            {"script": "echo hello! > $(workspaces.messages.path)/message"},
            workspaces=[{"name": "messages", "mountPath": "/custom/path/relative/to/root"}],
        ),
        "-w messages=/tmp",
        "script",
        "#!/bin/sh\nset -e\necho hello! > /custom/path/relative/to/root/message",
    ),
    (
        "variables.md: an optional workspace not given: bound false, path empty",
        one_step(
            {"args": ["[$(workspaces.cache.path)]", "$(workspaces.cache.bound)", "[$(workspaces.cache.claim)]"]},
            workspaces=[{"name": "cache", "optional": True}],
        ),
        None,
        "args",
        ("[]", "false", "[]"),
    ),
    (
        "tasks.md: $(results.<name>.path) and the bracket form",
        one_step(
            {"args": ["$(results.current-date-unix-timestamp.path)", "$(results['a'].path)", '$(results["a"].path)']},
            results=[{"name": "current-date-unix-timestamp"}, {"name": "a"}],
        ),
        None,
        "args",
        ("/tekton/results/current-date-unix-timestamp", "/tekton/results/a", "/tekton/results/a"),
    ),
    (
        "variables.md: context variables of a TaskRun",
        one_step(
            {
                "args": [
                    "$(context.taskRun.name)",
                    "$(context.taskRun.namespace)",
                    "$(context.taskRun.uid)",
                    "$(context.task.name)",
                    "$(context.task.retry-count)",
                ]
            }
        ),
        {},
        "args",
        ("tr-1", "ns1", "uid-1", "demo", "0"),
    ),
    (
        "variables.md: a step's exit code path; credentials path",
        {
            "steps": [
                {"name": "a", "image": IMG},
                {"image": IMG, "args": ["$(steps.step-a.exitCode.path)", "$(credentials.path)"]},
            ]
        },
        None,
        "args@1",
        ("/tekton/steps/step-a/exitCode", "/tekton/creds"),
    ),
    (
        "tasks.md: values reach scripts through env; shell's own $(...) and ${...} are left alone",
        one_step(
            {
                "env": [{"name": "SCRIPT_CONTENTS", "value": "$(params.script)"}],
                "script": "printf '%s' \"${SCRIPT_CONTENTS}\" > input-script; echo $(date +%s)",
            },
            params=[{"name": "script"}],
        ),
        {"script": "rm -rf /"},
        "script+env",
        (
            "#!/bin/sh\nset -e\nprintf '%s' \"${SCRIPT_CONTENTS}\" > input-script; echo $(date +%s)",
            (("SCRIPT_CONTENTS", "rm -rf /"),),
        ),
    ),
    (
        "the controller's passes: a param value holding $(context...) is replaced by the later pass, "
        "one holding $(params...) stays literal",
        one_step({"args": ["$(params.a)", "$(params.b)"]}, params=[{"name": "a"}, {"name": "b"}]),
        {"a": "run=$(context.taskRun.name)", "b": "$(params.a)"},
        "args",
        ("run=tr-1", "$(params.a)"),
    ),
    (
        "tasks.md: stepTemplate env FOO=bar, overridden by the step's FOO=baz",
        {
            "stepTemplate": {"env": [{"name": "FOO", "value": "bar"}], "image": IMG},
            "steps": [
                {"command": ["echo"], "args": ["FOO is ${FOO}"]},
                {"command": ["echo"], "args": ["FOO is ${FOO}"], "env": [{"name": "FOO", "value": "baz"}]},
            ],
        },
        None,
        "env@0,1",
        ((("FOO", "bar"),), (("FOO", "baz"),)),
    ),
    (
        "a script starting with a shebang is written verbatim, no preamble",
        one_step({"script": "#!/usr/bin/env python3\nprint('hi')\n"}),
        None,
        "script",
        "#!/usr/bin/env python3\nprint('hi')\n",
    ),
    (
        "kubelet expands $(VAR) from the container env in args; $$ escapes; unknown names stay",
        one_step(
            {
                "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "$(A)2"}],
                "args": ["$(A)", "$(B)", "$$(A)", "$(NOPE)"],
            }
        ),
        None,
        "args",
        ("1", "12", "$(A)", "$(NOPE)"),
    ),
]


def _field(plan, field):
    if field == "script+env":
        return plan.steps[0].script, plan.steps[0].env
    if field == "env@0,1":
        return plan.steps[0].env, plan.steps[1].env
    if field == "args@1":
        return plan.steps[1].args
    return getattr(plan.steps[0], field)


@pytest.mark.parametrize("spec,params,field,expected", [c[1:] for c in DOC_CASES], ids=[c[0] for c in DOC_CASES])
def test_substitution_from_tekton_docs(spec, params, field, expected):
    if params == "-w messages=/tmp":
        plan = plan_for(spec, workspaces=["messages=/tmp"])
    else:
        plan = plan_for(spec, params)
    assert _field(plan, field) == expected


def test_step_template_merge_v1_semantics():
    spec = {
        "stepTemplate": {
            "image": IMG,
            "command": ["/bin/template"],
            "workingDir": "/t",
            "securityContext": {"runAsUser": 1000, "capabilities": {"add": ["SETFCAP"]}},
            "env": [{"name": "A", "value": "t"}, {"name": "B", "value": "t"}],
        },
        "steps": [
            {
                "name": "own",
                "command": ["/bin/own"],
                "securityContext": {"privileged": True},
                "env": [{"name": "B", "value": "s"}, {"name": "C", "value": "s"}],
            },
            {"name": "inherit", "image": "other.example/img:2"},
        ],
    }
    own, inherit = plan_for(spec).steps
    assert own.command == ("/bin/own",) and own.image == IMG and own.working_dir == "/t"
    assert own.security_context == {"runAsUser": 1000, "capabilities": {"add": ["SETFCAP"]}, "privileged": True}
    assert own.env == (("A", "t"), ("B", "s"), ("C", "s"))
    assert inherit.command == ("/bin/template",) and inherit.image == "other.example/img:2"


@pytest.mark.parametrize(
    "step,spec_extra,params,message",
    [
        (
            {"args": ["build", "additionalArg $(params.build-args[*])"]},
            {"params": [{"name": "build-args", "type": "array"}]},
            {"build-args": ["a"]},
            "invalid references: steps[0] (s).args[1]: $(params.build-args[*]): array param 'build-args' can only be used "
            'as a whole element of command or args ("$(params.build-args[*])"), or one element with [i]',
        ),
        (
            {"image": "$(params.build-args[*])"},
            {"params": [{"name": "build-args", "type": "array"}]},
            {"build-args": ["a"]},
            "invalid references: steps[0] (s).image: $(params.build-args[*]): array param 'build-args' can only be used "
            'as a whole element of command or args ("$(params.build-args[*])"), or one element with [i]',
        ),
        (
            {"script": "echo $(params.list[*])"},
            {"params": [{"name": "list", "type": "array", "default": ["a"]}]},
            {},
            "invalid references: steps[0] (s).script: $(params.list[*]): array param 'list' can only be used "
            'as a whole element of command or args ("$(params.list[*])"), or one element with [i]',
        ),
        (
            {"args": ["$(params.nope)"]},
            {"params": [{"name": "a", "default": "x"}]},
            {},
            "invalid references: steps[0] (s).args[0]: $(params.nope): no param 'nope' is declared (declared: a)",
        ),
        (
            {"args": ["$(params.a[5])"]},
            {"params": [{"name": "a", "type": "array"}]},
            {"a": ["x"]},
            "invalid references: steps[0] (s).args[0]: $(params.a[5]): index 5 out of bounds for array param 'a' of length 1",
        ),
        (
            {"args": ["$(params.s[*])"]},
            {"params": [{"name": "s", "default": "x"}]},
            {},
            "invalid references: steps[0] (s).args[0]: $(params.s[*]): param 's' is a string: it takes no [*], [i] or .key",
        ),
        (
            {"args": ["$(params.o[*])"]},
            {"params": [{"name": "o", "type": "object", "properties": {"k": {}}, "default": {"k": "v"}}]},
            {},
            "invalid references: steps[0] (s).args[0]: $(params.o[*]): a whole object param ('o') cannot be used in a "
            "Task step; use $(params.o.KEY)",
        ),
        (
            {"env": [{"name": "X", "value": "$(params.o.nokey)"}]},
            {"params": [{"name": "o", "type": "object", "properties": {"k": {}}, "default": {"k": "v"}}]},
            {},
            "invalid references: steps[0] (s).env[X]: $(params.o.nokey): object param 'o' has no key 'nokey' (keys: k)",
        ),
        (
            {"workingDir": "$(workspaces.src.path)"},
            {},
            None,
            "invalid references: steps[0] (s).workingDir: $(workspaces.src.path): no workspace 'src' is declared (declared: none)",
        ),
        (
            {"args": ["$(workspaces.w.size)"]},
            {"workspaces": [{"name": "w", "optional": True}]},
            None,
            "invalid references: steps[0] (s).args[0]: $(workspaces.w.size): workspaces take .path, .bound, .claim or .volume, not .size",
        ),
        (
            {"script": "echo -n x > $(results.DIGEST.path)"},
            {"results": [{"name": "IMAGE_DIGEST"}]},
            None,
            "invalid references: steps[0] (s).script: $(results.DIGEST.path): no result 'DIGEST' is declared (declared: IMAGE_DIGEST)",
        ),
        (
            {"args": ["$(context.pipelineRun.name)"]},
            {},
            None,
            "invalid references: steps[0] (s).args[0]: $(context.pipelineRun.name): unknown context variable (known: "
            "task.name, task.retry-count, taskRun.name, taskRun.namespace, taskRun.uid)",
        ),
        (
            {"args": ["$(tasks.clone.results.commit)"]},
            {},
            None,
            "invalid references: steps[0] (s).args[0]: $(tasks.clone.results.commit): $(tasks...) references exist only in a Pipeline",
        ),
        (
            {"args": ["$(params.a)", "$(params.b)", "$(params.c)", "$(params.d)"]},
            {},
            None,
            "invalid references: steps[0] (s).args[0]: $(params.a): no param 'a' is declared (declared: none); "
            "steps[0] (s).args[1]: $(params.b): no param 'b' is declared (declared: none); "
            "steps[0] (s).args[2]: $(params.c): no param 'c' is declared (declared: none) (and 1 more)",
        ),
    ],
)
def test_reference_errors_before_anything_runs(step, spec_extra, params, message):
    with pytest.raises(UsageError) as exc:
        plan_for(one_step(step, **spec_extra), params)
    assert str(exc.value) == message


def test_kube_expand_matches_kubelet():
    env = {"A": "1", "EMPTY": ""}.get
    assert kube_expand("$(A)$(EMPTY)|$$|$$$(A)|$(|$x|$", env) == "1|$|$1|$(|$x|$"
