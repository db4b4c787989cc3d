"""The README's Pipeline commands, held against the files they name: every required param of the
catalog Pipeline is given, and every `taskimage run` line parses with the real CLI parser."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import yaml

from taskimage import cli

ROOT = Path(__file__).resolve().parent.parent


def commands(prefix: str) -> list[list[str]]:
    """Shell commands in the README's ```sh blocks starting with ``prefix`` (continuations joined)."""
    out, block, current = [], False, ""
    for line in (ROOT / "README.md").read_text().splitlines():
        if line.startswith("```"):
            block = line.strip() == "```sh" and not block
            continue
        if not block:
            continue
        current += line.split("  #")[0].rstrip().rstrip("\\") + " "
        if not line.rstrip().endswith("\\"):
            if current.strip().startswith(prefix):
                out.append(shlex.split(re.sub(r"\[[^\]]*\]", "", current)))  # synopsis: [optional] dropped
            current = ""
    return out


def test_pipeline_start_example_gives_every_required_param():
    starts = commands("taskimage pipeline start buildah-multiarch")
    assert starts, "the README no longer shows `taskimage pipeline start buildah-multiarch`"
    pipeline = yaml.safe_load((ROOT / "catalog/pipeline/buildah-multiarch/0.1/buildah-multiarch.yaml").read_text())
    required = {p["name"] for p in pipeline["spec"]["params"] if "default" not in p}
    for argv in starts:
        given = {argv[i + 1].split("=", 1)[0] for i, a in enumerate(argv) if a == "-p"}
        assert required <= given, f"missing {sorted(required - given)} in: {shlex.join(argv)}"


@pytest.mark.parametrize("argv", commands("taskimage run"), ids=lambda a: shlex.join(a)[:60])
def test_run_examples_parse(argv):
    parser = cli.build_parser()
    parser.parse_args(argv[1:])  # exits (SystemExit) on an unknown flag or a bad choice
