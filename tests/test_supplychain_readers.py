"""The static package readers against real package databases, each checked with the ecosystem's own
tool (dpkg-query, pip, npm, go version -m), and the SBOM documents against the format libraries."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
from conftest import need

from taskimage.supplychain import gobuildinfo, packages, sbom


def test_dpkg_reader_matches_dpkg_query_on_this_machine():
    need(shutil.which("dpkg-query") is not None and Path("/var/lib/dpkg/status").is_file(), "not a dpkg system")
    out = subprocess.run(
        ["dpkg-query", "-W", "-f", "${db:Status-Status} ${Package} ${Version} ${Architecture}\n"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    expected = {tuple(line.split()[1:]) for line in out.splitlines() if line.startswith("installed ")}
    found = {(p.name, p.version, p.arch) for p in packages.read_dpkg(Path("/"), "debian-12")}
    assert found == expected
    assert len(found) > 50


def _canon(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_python_reader_matches_pip_list_of_this_venv():
    site = Path(sysconfig.get_paths()["purelib"])
    out = subprocess.run(
        [sys.executable, "-m", "pip", "list", "--format", "json", "--path", str(site)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    expected = {(_canon(p["name"]), p["version"]) for p in json.loads(out)}
    found = {(_canon(p.name), p.version) for kind, p in packages.walk(site) if kind == "python"}
    assert found == expected
    pkgs = {_canon(p.name): p for kind, p in packages.walk(site) if kind == "python"}
    assert pkgs["pyyaml"].license  # MIT, from its metadata
    assert pkgs["pyyaml"].purl.startswith("pkg:pypi/pyyaml@")


def test_npm_reader_matches_npm_ls(tmp_path):
    prefix = Path.home() / ".cache/taskimage/npm"
    need(shutil.which("npm") is not None and (prefix / "node_modules").is_dir(), "npm and tekton-lint's node_modules")
    proc = subprocess.run(["npm", "ls", "--all", "--json", "--prefix", str(prefix)], capture_output=True, text=True)
    expected = set()

    def flatten(deps: dict) -> None:
        for name, info in deps.items():
            if info.get("version"):
                expected.add((name, info["version"]))
            flatten(info.get("dependencies") or {})

    flatten(json.loads(proc.stdout).get("dependencies") or {})
    found = {
        (f"{p.namespace}/{p.name}" if p.namespace else p.name, p.version)
        for kind, p in packages.walk(prefix / "node_modules")
        if kind == "npm"
    }
    assert expected and expected <= found  # npm ls leaves out dedup'd copies we do see
    scoped = [p for kind, p in packages.walk(prefix / "node_modules") if kind == "npm" and p.namespace]
    assert scoped and scoped[0].purl.startswith("pkg:npm/%40")


def _go_version_m(path: Path) -> dict:
    out = subprocess.run(["go", "version", "-m", str(path)], check=True, capture_output=True, text=True).stdout
    lines = [line.strip().split("\t") for line in out.splitlines()[1:]]
    return {
        "go": out.split(":", 1)[1].strip().split()[0],
        "path": next((f[1] for f in lines if f[0] == "path"), ""),
        "deps": [(f[1], f[2]) for f in lines if f[0] in ("dep", "=>")],
        "build": [tuple(f[1].split("=", 1)) for f in lines if f[0] == "build"],
    }


@pytest.mark.parametrize("goarch", ["amd64", "arm64", "s390x"])
def test_go_buildinfo_matches_go_version_m(tmp_path, goarch):
    need(shutil.which("go") is not None, "go is not installed (apt-get install golang-go)")
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib/go.mod").write_text("module example.com/lib\n\ngo 1.19\n")
    (tmp_path / "lib/lib.go").write_text('package lib\n\nfunc Hello() string { return "hi" }\n')
    (tmp_path / "app").mkdir()
    (tmp_path / "app/go.mod").write_text(
        "module example.com/app\n\ngo 1.19\n\nrequire example.com/lib v1.2.3\n\nreplace example.com/lib => ../lib\n"
    )
    (tmp_path / "app/main.go").write_text(
        'package main\n\nimport (\n\t"fmt"\n\t"example.com/lib"\n)\n\nfunc main() { fmt.Println(lib.Hello()) }\n'
    )
    env = {
        **os.environ,
        "GOARCH": goarch,
        "CGO_ENABLED": "0",
        "GOPROXY": "off",
        "GOFLAGS": "-mod=mod",
        "GOCACHE": str(tmp_path / "cache"),
        "GOPATH": str(tmp_path / "gopath"),
    }
    subprocess.run(["go", "build", "-o", "../app.bin", "."], cwd=tmp_path / "app", env=env, check=True)
    binary = tmp_path / "app.bin"
    want = _go_version_m(binary)
    info = gobuildinfo.read(binary)
    assert info is not None
    assert info.go_version == want["go"]
    assert info.path == want["path"] == "example.com/app"
    assert info.main and info.main.path == "example.com/app"
    assert info.settings == tuple(want["build"])
    assert ("GOARCH", goarch) in info.settings
    assert [(d.path, d.version) for d in info.deps] == want["deps"][-1:]  # the replacement is what was built
    found = {p.name for kind, p in packages.walk(tmp_path) if kind == "go"}
    assert found == {"example.com/app", "../lib", "stdlib"}


def test_go_buildinfo_of_installed_go_binaries():
    binaries = [Path(b) for b in ("/usr/bin/skopeo", "/usr/bin/docker-registry") if Path(b).is_file()]
    need(bool(binaries) and shutil.which("go") is not None, "skopeo/docker-registry and go")
    for binary in binaries:
        want = _go_version_m(binary)
        info = gobuildinfo.read(binary)
        assert info and (info.go_version, info.path, info.settings) == (want["go"], want["path"], tuple(want["build"]))
    assert gobuildinfo.read(Path(sys.executable).resolve()) is None  # ELF, not Go


def test_sboms_validate_with_the_format_libraries_and_a_broken_one_does_not(tmp_path):
    site = Path(sysconfig.get_paths()["purelib"])
    scan = packages.Scan([p for _, p in packages.walk(site)], "debian", "12")
    image = sbom.Subject("registry.example/team/app", "sha256:" + "a" * 64, "linux/arm64")
    index = sbom.Subject("registry.example/team/app", "sha256:" + "b" * 64)
    for fmt in sbom.FORMATS:
        doc = sbom.image_document(fmt, image, scan)
        assert sbom.validate(fmt, doc) == ""
        assert sbom.validate(fmt, sbom.index_document(fmt, index, [image])) == ""
        broken = json.loads(doc)
        if fmt == "spdx":
            del broken["packages"][1]["SPDXID"]
        else:
            broken["components"][0]["type"] = "not-a-type"
        assert sbom.validate(fmt, json.dumps(broken).encode()) != ""
