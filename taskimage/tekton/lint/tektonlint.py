"""A second opinion: IBM's ``@ibm/tekton-lint`` (npm) on the same YAML.

It knows rules we do not (unused params, missing required params of referenced Tasks, cycles in
runAfter, kebab-case names...). It is a Node program, so it is not a Python dependency: CI
installs it with ``npm install --prefix DIR @ibm/tekton-lint`` and points ``TEKTON_LINT`` at
``DIR/node_modules/.bin/tekton-lint`` (or puts it on PATH).

Our config (``tekton_lint_config``): its defaults, minus the rules that misfire on this
project's conventions (UPPER_SNAKE params as in tektoncd/catalog; ``prefer-kebab-case`` would
flag them; resolver references it cannot follow) and with ``no-latest-image`` raised to an
error as the catalog requires. Known gaps of tekton-lint 1.1 (so keep the project's YAML
within them, or our own lint is the only judge): object params are "wrong type", and
``$(params.X[0])`` / ``$(params.O.key)`` are "undefined param".
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

from taskimage import proc as tools
from taskimage.errors import UsageError
from taskimage.tekton.lint.problems import ERROR, WARNING, Problem

TEKTON_LINT_ENV = "TEKTON_LINT"

RULES = {
    "no-latest-image": "error",
    "prefer-kebab-case": "off",  # catalog params are UPPER_SNAKE
    "prefer-camel-kebab-case": "off",
    "prefer-beta": "off",  # asks for v1beta1, we write v1
    # Tasks taken through a resolver (git-clone from the hub, our Task from a bundle) are not in
    # the linted set, so it reports them (as task 'undefined') although nothing is missing.
    "no-missing-resource": "warning",
}


def tekton_lint_config() -> str:
    """The ``.tektonlintrc.yaml`` content (JSON is valid YAML)."""
    return json.dumps({"rules": RULES}, indent=2) + "\n"


def find_tekton_lint() -> str | None:
    return os.environ.get(TEKTON_LINT_ENV) or shutil.which("tekton-lint")


def tekton_lint_argv(executable: str, files: Sequence[str], config_dir: str) -> list[str]:
    """``tekton-lint --config DIR --format json --color false FILE...`` (files, not globs)."""
    return [executable, "--config", config_dir, "--format", "json", "--color", "false", *files]


def as_problems(found: list[dict]) -> list[Problem]:
    """tekton-lint's JSON problems in our one-line format (kind ``tekton-lint``, name = rule)."""
    out = []
    for p in found:
        line = (p.get("loc") or {}).get("startLine") or 1
        severity = ERROR if p.get("level") == "error" else WARNING
        out.append(
            Problem(
                str(p.get("path", "?")),
                int(line),
                "tekton-lint",
                str(p.get("rule", "?")),
                str(p.get("message", "")),
                severity,
            )
        )
    return out


def run_tekton_lint(files: Sequence[str | Path], executable: str | None = None) -> tuple[int, list[dict]]:
    """Run tekton-lint on ``files``; return its exit code and its problems (JSON formatter)."""
    exe = executable or find_tekton_lint()
    if not exe:
        raise UsageError(
            f"lint: tekton-lint not found: npm install --prefix DIR @ibm/tekton-lint and set {TEKTON_LINT_ENV}"
        )
    with tempfile.TemporaryDirectory(prefix="tekton-lint-") as config_dir:
        Path(config_dir, ".tektonlintrc.yaml").write_text(tekton_lint_config())
        result = tools.run(
            tekton_lint_argv(exe, [str(f) for f in files], config_dir),
            check=False,
            stream=False,
            quiet=True,
            what="tekton-lint",
        )
    # stdout holds the JSON array, possibly followed by its logger's lines.
    text = result.stdout
    start = text.find("[")
    problems = json.JSONDecoder().raw_decode(text, start)[0] if start >= 0 else []
    return result.returncode, problems
