"""``taskimage run``: run a Tekton Task on one machine, with podman, by Tekton's rules.

Split by concern:

- :mod:`.task` reads Tasks and TaskRuns and merges ``stepTemplate`` into steps;
- :mod:`.params` resolves params (defaults, missing, types, ``tkn``-style ``-p`` values);
- :mod:`.substitute` is Tekton's variable substitution (and kubelet's ``$(VAR)`` expansion);
- :mod:`.plan` decides everything before anything runs (every input error surfaces there);
- :mod:`.podman` builds ``podman run`` command lines (pure functions);
- :mod:`.runner` runs the steps in order and :mod:`.results` reads results back and checks them;
- :mod:`.runtime` gives a step a Pod's default capabilities (containerd's or CRI-O's);
- :mod:`.sidecars` starts sidecars, awaits their readiness and stops them;
- :mod:`.stepactions` resolves ``steps[].ref`` (file, ``--stepaction``, bundles) and step results;
- :mod:`.kubeobjects` binds ConfigMaps, Secrets and PVCs (from the file or directories) and
  :mod:`.creds` sets up a ServiceAccount's credentials as Tekton's creds-init does.

Pipelines and PipelineRuns, on top of the TaskRun runner:

- :mod:`.pipeline` the engine (checks, substitution, scheduling, finally, retries, timeouts);
- :mod:`.resolve` taskRef/pipelineRef resolution (files, bundles, git, hub, stand-ins);
- :mod:`.dag`, :mod:`.matrix`, :mod:`.when` Tekton's graph, matrix fan-out and when expressions;
- :mod:`.report` the PipelineRun's table and JSON; :mod:`.pac` Pipelines-as-Code events.
"""

from taskimage.tekton.localrun.plan import Plan, StepPlan, make_plan
from taskimage.tekton.localrun.runner import Options, RunReport, execute
from taskimage.tekton.localrun.task import Loaded, load_documents, pick_task, taskrun_task

__all__ = [
    "Loaded",
    "Options",
    "Plan",
    "RunReport",
    "StepPlan",
    "execute",
    "load_documents",
    "make_plan",
    "pick_task",
    "taskrun_task",
]
