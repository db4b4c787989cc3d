"""The README's package table matches the tree (`python -m taskimage.dev.layout --check`)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def layout(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "taskimage.dev.layout", *argv], cwd=REPO, capture_output=True, text=True, timeout=120
    )


def test_readme_layout_table_is_current() -> None:
    done = layout("--check")
    assert done.returncode == 0, done.stderr
    # the table names every module file of the package (read from the tree here, not from the generator)
    readme = (REPO / "README.md").read_text()
    modules = [p.relative_to(REPO).as_posix() for p in (REPO / "taskimage").rglob("*.py")]
    missing = [m for m in modules if not m.endswith(("__init__.py", "__main__.py")) and f"| `{m}` |" not in readme]
    assert missing == []


def test_a_stale_table_fails_the_check_and_is_rewritten(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    current = (REPO / "README.md").read_text()
    readme.write_text(current.replace("| `taskimage/proc.py` |", "| `taskimage/tools.py` |"))
    done = layout("--check", "--readme", str(readme))
    assert done.returncode == 1
    assert "+| `taskimage/proc.py` |" in done.stderr and "the layout table is stale" in done.stderr
    assert layout("--readme", str(readme)).returncode == 0
    assert readme.read_text() == current


def test_missing_markers_are_a_usage_error(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text("# no table here\n")
    done = layout("--check", "--readme", str(readme))
    assert done.returncode == 2 and "needs exactly one" in done.stderr
    assert readme.read_text() == "# no table here\n"
