"""The one YAML reader: every command that reads Tekton YAML refuses a duplicate key with the
same ``FILE:LINE`` message (as the API server's strict field validation does), and ``lint``
reports that same message as a problem."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from conftest import need

from taskimage import cli
from taskimage.tekton import yamlio

DUPLICATE = Path(__file__).parent / "data/lint/bad/duplicate-field.yaml"
CRDS = os.environ.get("TASKIMAGE_CRDS") or str(Path(__file__).resolve().parents[2] / "shared" / "tekton-crds")


@pytest.fixture
def dup(tmp_path: Path) -> Path:
    path = tmp_path / "dup.yaml"
    shutil.copy(DUPLICATE, path)
    return path


def _commands(path: Path) -> dict[str, list[str]]:
    return {
        # port 1: if loading let the file through, the push would fail differently
        "bundle push": ["bundle", "push", "127.0.0.1:1/never/pushed:x", str(path)],
        "cluster install": [
            "cluster",
            "install",
            "--from",
            str(path.parent),
            "--task",
            path.name,
            "--pipeline",
            path.name,
            "--skip-binfmt",
            "--kubeconfig",
            str(path.parent / "no-kubeconfig"),
        ],
        "run": ["run", str(path)],
    }


def test_a_duplicate_key_is_refused_identically_by_every_command(dup, capsys):
    expected = f'ERROR: {dup}:11: duplicate field "spec.steps[0].image" (first on line 9)'
    for name, argv in _commands(dup).items():
        assert cli.main(argv) == 2, name
        out, err = capsys.readouterr()
        assert err.strip().splitlines()[-1] == expected, (name, err)
        assert out == "", name


def test_lint_reports_the_same_duplicate_as_a_problem(dup, capsys):
    need(Path(CRDS, "300-task.yaml").is_file(), f"Tekton CRDs not found in {CRDS} (set TASKIMAGE_CRDS)")
    assert cli.main(["lint", "--crds", CRDS, str(dup)]) == 1
    out, _ = capsys.readouterr()
    assert out.strip() == f'{dup}:11: Task/bad-duplicate-field: duplicate field "spec.steps[0].image" (first on line 9)'


def test_duplicates_anywhere_are_found_with_both_lines():
    text = "a: 1\nb:\n  - x: 1\n    y: 2\n    x: 3\n---\nc: 1\nc: 2\n"
    with pytest.raises(yamlio.YamlError) as info:
        yamlio.load_all(text, "f.yaml")
    assert str(info.value) == 'f.yaml:5: duplicate field "b[0].x" (first on line 3)'
    docs, error = yamlio.read_documents(text, "f.yaml")
    assert error is None
    assert [[(d.path, d.line, d.first_line) for d in doc.duplicates] for doc in docs] == [
        [(("b", 0, "x"), 5, 3)],
        [(("c",), 8, 7)],
    ]


def test_merge_keys_are_not_duplicates_and_timestamps_stay_strings():
    text = "base: &b {x: 1}\none:\n  <<: *b\n  <<: *b\n  y: 2\nwhen: 2024-01-02T03:04:05Z\nday: 2024-01-02\n"
    (data,) = yamlio.load_all(text, "f.yaml")
    assert data["one"] == {"x": 1, "y": 2}
    assert data["when"] == "2024-01-02T03:04:05Z" and data["day"] == "2024-01-02"


def test_syntax_errors_name_file_and_line():
    with pytest.raises(yamlio.YamlError, match=r"^f\.yaml:4: YAML syntax error"):
        yamlio.load_all("a: 1\nb:\n  - x\n c: 2\n", "f.yaml")
    docs, error = yamlio.read_documents("a: 1\n---\nb: [\n", "f.yaml")
    assert [d.data for d in docs] == [{"a": 1}] and error is not None and error.line >= 3


def test_empty_documents_stay_as_none_and_load_one_refuses_two():
    assert yamlio.load_all("---\n---\na: 1\n", "f.yaml") == [None, {"a": 1}]
    with pytest.raises(yamlio.YamlError, match="expected one YAML document, found 2"):
        yamlio.load_one("a: 1\n---\nb: 2\n", "f.yaml")
