"""`.ci/fetch-tekton`, the way a clone without ../shared gets the Tekton CRDs and examples.

Real components: bash, curl, sha256sum and a real HTTP server (Python's, on 127.0.0.1) serving a
copy of the Tekton files, standing in for raw.githubusercontent.com through the script's base-URL
variables. The downloaded files are compared byte for byte with the served ones, and the server's
own request log shows that they came over HTTP rather than from ../shared.
"""

from __future__ import annotations

import functools
import http.server
import os
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import need

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / ".ci" / "fetch-tekton"
CRDS = Path(os.environ.get("TASKIMAGE_CRDS") or REPO.parent / "shared" / "tekton-crds")
EXAMPLES = Path(os.environ.get("TASKIMAGE_TEKTON_EXAMPLES") or REPO.parent / "shared" / "tekton-examples")


class _Handler(http.server.SimpleHTTPRequestHandler):
    requests: list[str]

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (the base class's name)
        self.requests.append(self.path)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Path, str, list[str]]]:
    """A copy of the CRDs and examples under tmp/www, served over HTTP: (root, base URL, request log)."""
    need(shutil.which("curl") is not None, "curl (apt install curl)")
    need((CRDS / "300-task.yaml").is_file(), f"Tekton CRDs not found in {CRDS} (set TASKIMAGE_CRDS)")
    need((EXAMPLES / "LICENSE").is_file(), f"Tekton examples not found in {EXAMPLES} (set TASKIMAGE_TEKTON_EXAMPLES)")
    www = tmp_path / "www"
    shutil.copytree(CRDS, www / "crds")
    shutil.copytree(EXAMPLES, www / "examples")
    requests: list[str] = []
    handler = type("Handler", (_Handler,), {"requests": requests})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(handler, directory=str(www)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield www, f"http://127.0.0.1:{server.server_address[1]}", requests
    finally:
        server.shutdown()
        server.server_close()


def _fetch(tmp_path: Path, base: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "TASKIMAGE_SHARED": str(tmp_path / "no-shared"),  # as in a clone without ../shared
        "TASKIMAGE_CACHE": str(tmp_path / "cache"),
        "TASKIMAGE_CRDS_BASE_URL": f"{base}/crds",
        "TASKIMAGE_EXAMPLES_BASE_URL": f"{base}/examples",
    }
    return subprocess.run(["bash", str(SCRIPT), "--env"], env=env, capture_output=True, text=True, timeout=300)


def _pinned(name: str) -> list[str]:
    return [line.split(maxsplit=1)[1] for line in (REPO / ".ci" / "pins" / name).read_text().splitlines()]


def test_a_clone_without_shared_downloads_the_pinned_files(tmp_path: Path, served) -> None:
    www, base, requests = served
    done = _fetch(tmp_path, base)
    assert done.returncode == 0, done.stderr
    crds = tmp_path / "cache" / "tekton-v1.15.0" / "crds"
    examples = tmp_path / "cache" / "tekton-v1.15.0" / "examples"
    assert done.stdout.strip() == f"export TASKIMAGE_CRDS={crds} TASKIMAGE_TEKTON_EXAMPLES={examples}"
    crd_files, example_files = _pinned("tekton-crds.sha256"), _pinned("tekton-examples.sha256")
    assert len(crd_files) == 5 and "300-task.yaml" in crd_files
    assert "LICENSE" in example_files and any(f.startswith("taskruns/") for f in example_files)
    for name in crd_files:
        assert (crds / name).read_bytes() == (www / "crds" / name).read_bytes(), name
    for name in example_files:
        assert (examples / name).read_bytes() == (www / "examples" / name).read_bytes(), name
    # every file came over HTTP (not copied from a ../shared), and nothing else was asked for
    assert sorted(requests) == sorted([f"/crds/{n}" for n in crd_files] + [f"/examples/{n}" for n in example_files])
    # a second run only checks what is there: no request
    requests.clear()
    again = _fetch(tmp_path, base)
    assert again.returncode == 0, again.stderr
    assert requests == []
    assert "(matches .ci/pins/tekton-crds.sha256)" in again.stderr


def test_a_tampered_file_fails_and_leaves_nothing(tmp_path: Path, served) -> None:
    www, base, requests = served
    task = www / "crds" / "300-task.yaml"
    task.write_bytes(task.read_bytes().replace(b"type: string", b"type: integer", 1))
    done = _fetch(tmp_path, base)
    assert done.returncode != 0
    assert "300-task.yaml: FAILED" in done.stderr, done.stderr
    assert "export" not in done.stdout
    assert "/crds/300-task.yaml" in requests  # it did download, and then refused
    cache = tmp_path / "cache" / "tekton-v1.15.0"
    assert not (cache / "crds").exists()
    assert [p.name for p in cache.iterdir()] == []  # no half-written temporary directory either


def test_a_missing_file_on_the_server_fails(tmp_path: Path, served) -> None:
    www, base, _ = served
    (www / "examples" / "LICENSE").unlink()
    done = _fetch(tmp_path, base)
    assert done.returncode != 0
    assert f"could not download {base}/examples/LICENSE" in done.stderr, done.stderr
    assert not (tmp_path / "cache" / "tekton-v1.15.0" / "examples").exists()


def test_the_shared_copy_is_used_in_place_when_present(tmp_path: Path, served) -> None:
    www, base, requests = served
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "tekton-crds").symlink_to(www / "crds")
    (shared / "tekton-examples").symlink_to(www / "examples")
    env = {**os.environ, "TASKIMAGE_SHARED": str(shared), "TASKIMAGE_CACHE": str(tmp_path / "cache")}
    done = subprocess.run(["bash", str(SCRIPT), "--env"], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == (
        f"export TASKIMAGE_CRDS={shared}/tekton-crds TASKIMAGE_TEKTON_EXAMPLES={shared}/tekton-examples"
    )
    assert requests == [] and not (tmp_path / "cache").exists()
    # a ../shared that differs from the pins is refused, not used
    (www / "crds" / "300-pipeline.yaml").write_text("kind: Nothing\n")
    done = subprocess.run(["bash", str(SCRIPT), "--env"], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode != 0 and "300-pipeline.yaml: FAILED" in done.stderr
