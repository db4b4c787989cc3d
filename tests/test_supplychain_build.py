"""SBOM and provenance of real builds, read back from a real registry (distribution 2.8: no referrers
API, so through the OCI 1.1 fallback tag) with plain HTTP and skopeo, and checked against the images
themselves (dpkg-query run inside each image, the arm64 one under qemu)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from conftest import emulation_ready, have_tools, need, skopeo_raw, skopeo_raw_bytes, tag_exists
from faultproxy import Fault, FaultProxy
from packageurl import PackageURL

from taskimage.dev import env as devenv
from taskimage.supplychain import sbom

pytestmark = [pytest.mark.tools]

PLATFORMS = ("linux/amd64", "linux/arm64")
SECRET_ARG = "build-arg-not-a-secret"


@pytest.fixture(scope="module")
def trixie_base(registry) -> str:
    need(have_tools("mmdebstrap", "buildah", "skopeo"), "mmdebstrap, buildah and skopeo (see .ci/run)")
    need(os.geteuid() == 0, "buildah builds here run as root")
    ok, why = emulation_ready(("linux/arm64",))
    need(ok, why)
    return devenv.base_image("trixie", PLATFORMS, f"{registry.host}/base/trixie:13")


def taskimage(argv, env, timeout=1200):
    proc = subprocess.run(
        [sys.executable, "-m", "taskimage", *argv],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=timeout,
    )
    return proc.returncode, proc.stdout, proc.stderr


def context(tmp_path: Path, base: str) -> Path:
    """A Debian image with a Python package and an npm package added (dist-info, package.json)."""
    ctx = tmp_path / "ctx"
    (ctx / "site/demo_pkg-1.2.3.dist-info").mkdir(parents=True)
    (ctx / "site/demo_pkg-1.2.3.dist-info/METADATA").write_text(
        "Metadata-Version: 2.1\nName: demo-pkg\nVersion: 1.2.3\nLicense-Expression: MIT\n"
    )
    (ctx / "node/node_modules/left-pad").mkdir(parents=True)
    (ctx / "node/node_modules/left-pad/package.json").write_text(
        json.dumps({"name": "left-pad", "version": "1.3.0", "license": "WTFPL"})
    )
    (ctx / "Containerfile").write_text(
        f"FROM {base}\n"
        "ARG GREETING\n"
        "COPY site/ /usr/local/lib/python3.13/dist-packages/\n"
        "COPY node/ /srv/app/\n"
        'RUN echo "$GREETING" > /greeting\n'
    )
    return ctx


def http_get(url: str, accept: str = "") -> bytes:
    req = urllib.request.Request(url, headers={"Accept": accept} if accept else {})
    with urllib.request.urlopen(req, timeout=60) as resp:
        return resp.read()


def referrers_by_tag(registry, repo: str, digest: str) -> list[dict]:
    """The OCI 1.1 referrers tag schema, read with skopeo: the tag sha256-<hex> holds an index."""
    tag = f"{registry.host}/{repo}:sha256-{digest.split(':')[1]}"
    assert tag_exists(tag), f"no fallback tag {tag}"
    return skopeo_raw(tag)["manifests"]


def artifact(registry, repo: str, desc: dict) -> bytes:
    manifest = json.loads(http_get(f"http://{registry.host}/v2/{repo}/manifests/{desc['digest']}", desc["mediaType"]))
    assert manifest["artifactType"] == desc["artifactType"]
    return http_get(f"http://{registry.host}/v2/{repo}/blobs/{manifest['layers'][0]['digest']}")


def dpkg_query(image_ref: str, platform: str, tmp_path: Path) -> set[tuple[str, str, str]]:
    """Run dpkg-query inside the pushed image (buildah run; arm64 under qemu)."""
    root, run = tmp_path / f"q-root-{platform.replace('/', '-')}", tmp_path / "q-run"
    base = ["buildah", "--root", str(root), "--runroot", str(run), "--storage-driver", "vfs"]
    env = {**os.environ, "BUILDAH_ISOLATION": "chroot"}
    name = subprocess.run(
        [*base, "from", "--tls-verify=false", "--platform", platform, f"docker://{image_ref}"],
        check=True,
        capture_output=True,
        text=True,
        env=env,
    ).stdout.strip()
    try:
        out = subprocess.run(
            [*base, "run", name, "--", "dpkg-query", "-W", "-f", "${Package} ${Version} ${Architecture}\\n"],
            check=True,
            capture_output=True,
            text=True,
            env=env,
        ).stdout
        machine = subprocess.run(
            [*base, "run", name, "--", "uname", "-m"], check=True, capture_output=True, text=True, env=env
        ).stdout
    finally:
        subprocess.run([*base, "rm", name], capture_output=True, env=env)
        subprocess.run([*base, "rmi", "--all", "--force"], capture_output=True, env=env)
    assert machine.strip() == {"linux/amd64": "x86_64", "linux/arm64": "aarch64"}[platform]
    return {tuple(line.split()) for line in out.splitlines() if line.strip()}  # type: ignore[misc]


@pytest.mark.emulation
def test_build_attaches_sbom_and_provenance_as_referrers(tmp_path, registry, trixie_base):
    repo = "sc/app"
    image = f"{registry.host}/{repo}:1"
    results = tmp_path / "results"
    results.mkdir()
    store = tmp_path / "store"
    env = {
        "TASKIMAGE_ROOT": str(store / "root"),
        "TASKIMAGE_RUNROOT": str(store / "run"),
        "TASKIMAGE_TLSVERIFY": "false",
    }
    code, out, err = taskimage(
        [
            "build", "--image", image, "--context", str(context(tmp_path, trixie_base)),
            "--build-arg", f"GREETING={SECRET_ARG}", "--results-dir", str(results), "--evict", *PLATFORMS,
        ],
        env,
    )  # fmt: skip
    assert code == 0, err[-3000:]
    res = {p.name: p.read_text() for p in results.iterdir()}

    # the index has exactly one entry per platform: nothing attached inside it
    index = skopeo_raw(image)
    assert sorted(f"{m['platform']['os']}/{m['platform']['architecture']}" for m in index["manifests"]) == list(
        PLATFORMS
    )
    index_digest = res["IMAGE_DIGEST"]

    # the index's referrers, through the fallback tag: its SBOM and its provenance
    refs = referrers_by_tag(registry, repo, index_digest)
    assert sorted(d["artifactType"] for d in refs) == ["application/spdx+json", "application/vnd.in-toto+json"]
    index_sbom = artifact(registry, repo, next(d for d in refs if d["artifactType"] == "application/spdx+json"))
    assert sbom.validate("spdx", index_sbom) == ""
    listed = {p["versionInfo"] for p in json.loads(index_sbom)["packages"]}
    assert {m["digest"] for m in index["manifests"]} | {index_digest} == listed

    # SBOM_BLOB_URL resolves to that document
    blob_repo, _, blob_digest = res["SBOM_BLOB_URL"].partition("@")
    assert blob_repo == f"{registry.host}/{repo}"
    assert http_get(f"http://{registry.host}/v2/{repo}/blobs/{blob_digest}") == index_sbom
    assert len(res["ATTESTATIONS"].split(",")) == 6

    for entry in index["manifests"]:
        platform = f"{entry['platform']['os']}/{entry['platform']['architecture']}"
        arch = entry["platform"]["architecture"]
        refs = referrers_by_tag(registry, repo, entry["digest"])
        assert sorted(d["artifactType"] for d in refs) == ["application/spdx+json", "application/vnd.in-toto+json"]
        doc_bytes = artifact(registry, repo, next(d for d in refs if d["artifactType"] == "application/spdx+json"))
        assert sbom.validate("spdx", doc_bytes) == ""
        doc = json.loads(doc_bytes)
        purls = [r["referenceLocator"] for p in doc["packages"] for r in p.get("externalRefs", [])]
        debs = {}
        for purl in map(PackageURL.from_string, purls):
            if purl.type == "deb":
                assert purl.namespace == "debian" and purl.qualifiers["distro"] == "debian-13"
                debs[purl.name] = purl.qualifiers["arch"]
        inside = dpkg_query(f"{registry.host}/{repo}@{entry['digest']}", platform, tmp_path)
        sbom_debs = {(p["name"], p["versionInfo"], debs[p["name"]]) for p in doc["packages"] if p["name"] in debs}
        assert sbom_debs == inside
        assert {a for _, _, a in inside} <= {arch, "all"} and arch in {a for _, _, a in inside}
        assert any(p.startswith("pkg:pypi/demo-pkg@1.2.3") for p in purls)
        assert any(p.startswith("pkg:npm/left-pad@1.3.0") for p in purls)
        assert any(p["name"] == "demo-pkg" and p.get("licenseDeclared") == "MIT" for p in doc["packages"])

        statement = json.loads(
            artifact(registry, repo, next(d for d in refs if d["artifactType"] == "application/vnd.in-toto+json"))
        )
        assert statement["_type"] == "https://in-toto.io/Statement/v1"
        assert statement["predicateType"] == "https://slsa.dev/provenance/v1"
        assert statement["subject"] == [{"name": f"{registry.host}/{repo}", "digest": {"sha256": entry["digest"][7:]}}]
        definition = statement["predicate"]["buildDefinition"]
        assert definition["externalParameters"]["platforms"] == [platform]
        assert definition["externalParameters"]["buildArgs"] == {"GREETING": SECRET_ARG}
        deps = {d["uri"]: d["digest"] for d in definition["resolvedDependencies"]}
        base_for_platform = next(
            m["digest"] for m in skopeo_raw(trixie_base)["manifests"] if m["platform"]["architecture"] == arch
        )
        assert deps[f"oci://{trixie_base}"] == {"sha256": base_for_platform[7:]}
        times = statement["predicate"]["runDetails"]["metadata"]
        assert times["startedOn"] <= times["finishedOn"]

        # the CLI reads the same documents back
        code, printed, err = taskimage(["sbom", image, "--platform", platform, "--tls-verify=false"], {})
        assert code == 0, err
        assert printed.strip().encode() == doc_bytes.strip()
    code, printed, err = taskimage(["provenance", image, "--tls-verify=false"], {})
    assert code == 0, err
    assert {s["digest"]["sha256"] for s in json.loads(printed)["subject"]} == {
        d[7:] for d in [index_digest, *(m["digest"] for m in index["manifests"])]
    }


def test_sbom_none_and_provenance_false_attach_nothing(tmp_path, registry, trixie_base):
    repo = "sc/plain"
    image = f"{registry.host}/{repo}:1"
    results = tmp_path / "results"
    results.mkdir()
    env = {
        "TASKIMAGE_ROOT": str(tmp_path / "root"),
        "TASKIMAGE_RUNROOT": str(tmp_path / "run"),
        "TASKIMAGE_TLSVERIFY": "false",
    }
    code, _, err = taskimage(
        ["build", "--image", image, "--context", str(context(tmp_path, trixie_base)), "--sbom", "none",
         "--provenance", "false", "--results-dir", str(results), "linux/amd64"],
        env,
    )  # fmt: skip
    assert code == 0, err[-3000:]
    tags = json.loads(http_get(f"http://{registry.host}/v2/{repo}/tags/list"))["tags"]
    assert tags == ["1"]
    assert (results / "SBOM_BLOB_URL").read_text() == ""
    assert (results / "ATTESTATIONS").read_text() == ""
    code, _, err = taskimage(["sbom", image, "--tls-verify=false"], {})
    assert code == 1 and "no application/spdx+json" in err


def test_attached_documents_hold_no_credentials(tmp_path, busybox_base):
    """A build with --creds against a registry that wants a login: every referrer it attached (and
    the fallback index) is read back with the login and searched for the password in every form."""
    import base64
    import secrets as pysecrets

    user, password = "sc-bot", "Pw-" + pysecrets.token_hex(12)
    need(have_tools("htpasswd"), "htpasswd (apache2-utils) for a registry that wants a login")
    line = subprocess.run(["htpasswd", "-nbB", "-C", "4", user, password], check=True, capture_output=True, text=True)
    (tmp_path / "htpasswd").write_text(line.stdout.strip() + "\n")
    forms = [password.encode(), f"{user}:{password}".encode(), base64.b64encode(f"{user}:{password}".encode())]
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Containerfile").write_text(f'FROM {busybox_base}\nARG NOTE\nRUN echo "$NOTE" > /note\n')
    with devenv.LocalRegistry(tmp_path / "reg", htpasswd=str(tmp_path / "htpasswd")) as reg:
        image = f"{reg.host}/sc/private:1"
        env = {
            "TASKIMAGE_ROOT": str(tmp_path / "root"),
            "TASKIMAGE_RUNROOT": str(tmp_path / "run"),
            "TASKIMAGE_TLSVERIFY": "false",
        }
        code, out, err = taskimage(
            ["build", "--image", image, "--context", str(ctx), "--creds", f"{user}:{password}",
             "--platform", "linux/amd64", "--build-arg", "NOTE=hello"],
            env,
        )  # fmt: skip
        assert code == 0, err[-3000:]
        basic = {"Authorization": "Basic " + forms[2].decode()}

        def get(path: str, accept: str = "") -> bytes:
            headers = dict(basic, **({"Accept": accept} if accept else {}))
            with urllib.request.urlopen(urllib.request.Request(f"http://{reg.host}{path}", headers=headers)) as r:
                return r.read()

        tags = json.loads(get("/v2/sc/private/tags/list"))["tags"]
        fallback = [t for t in tags if t.startswith("sha256-")]
        assert len(fallback) == 2  # the index's and the amd64 image's
        documents = []
        for tag in fallback:
            listing = get(f"/v2/sc/private/manifests/{tag}", "application/vnd.oci.image.index.v1+json")
            documents.append(listing)
            for desc in json.loads(listing)["manifests"]:
                manifest = get(f"/v2/sc/private/manifests/{desc['digest']}", desc["mediaType"])
                documents.append(manifest)
                documents += [
                    get(f"/v2/sc/private/blobs/{layer['digest']}") for layer in json.loads(manifest)["layers"]
                ]
        assert len(documents) == 2 + 4 + 4
        assert any(b'"NOTE": "hello"' in d for d in documents)  # the provenance is there, with the build arg
        assert not [f for d in documents for f in forms if f in d]
        assert not [f for f in forms if f.decode() in out + err]


def test_a_transient_fault_on_a_referrer_push_is_retried(tmp_path, registry, busybox_base):
    """A 503 on the first PUT of a referrers fallback tag (through a fault proxy in front of the
    real registry): retried, the build succeeds, and both fallback tags list their referrers."""
    sys.path.insert(0, str(Path(__file__).parent))

    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Containerfile").write_text(f"FROM {busybox_base}\nCOPY Containerfile /Containerfile\n")
    fault = Fault("503", ("PUT",), r"^/v2/.+/manifests/sha256-[0-9a-f]{64}$", times=1)
    env = {
        "TASKIMAGE_ROOT": str(tmp_path / "root"),
        "TASKIMAGE_RUNROOT": str(tmp_path / "run"),
        "TASKIMAGE_TLSVERIFY": "false",
    }
    with FaultProxy(registry.host, [fault]) as proxy:
        code, _, err = taskimage(
            ["build", "--image", f"{proxy.host}/sc/faulty:1", "--context", str(ctx), "--retry-delay", "1",
             "--platform", "linux/amd64"],
            env,
        )  # fmt: skip
        fallback_puts = [r.status for r in proxy.log if r.method == "PUT" and re.search(r"/manifests/sha256-", r.path)]
    assert code == 0, err[-3000:]
    assert fault.fired == 1
    assert fallback_puts[0] == 503 and fallback_puts.count(201) == 4  # 2 subjects x (SBOM, provenance)
    assert "retrying in 1 s (1 of 3)" in err
    index = skopeo_raw(f"{registry.host}/sc/faulty:1")
    index_digest = "sha256:" + hashlib.sha256(skopeo_raw_bytes(f"{registry.host}/sc/faulty:1")).hexdigest()
    for digest in [m["digest"] for m in index["manifests"]] + [index_digest]:
        assert len(referrers_by_tag(registry, "sc/faulty", digest)) == 2


def test_an_image_reused_by_the_whole_build_key_keeps_or_gets_its_sbom(tmp_path, registry, trixie_base):
    """Reused in the same repository: the earlier run's SBOM stays the one (not scanned again).
    Reused into another repository: the SBOM is made from the package scan the building run filed
    beside the image in the layer cache, without one of the image's layers being downloaded, and
    lists what the built image's SBOM lists under the new repository's name. A cache without that
    scan (filed by an older version) costs one read of the layers, which files the scan."""
    ctx = context(tmp_path, trixie_base)
    cache = f"{registry.host}/sc/cache"
    scan_type = "application/vnd.taskimage.package-scan.v1+json"

    def build(image: str, store: str, cache: str = cache) -> str:
        env = {
            "TASKIMAGE_ROOT": str(tmp_path / store / "root"),
            "TASKIMAGE_RUNROOT": str(tmp_path / store / "run"),
            "TASKIMAGE_TLSVERIFY": "false",
        }
        code, _, err = taskimage(
            ["build", "--image", image, "--context", str(ctx), "--cache-repo", cache, "--build-arg", "GREETING=hi",
             "--platform", "linux/amd64"],
            env,
        )  # fmt: skip
        assert code == 0, err[-3000:]
        return err

    def sbom_of(repo: str, digest: str) -> tuple[list[dict], set, dict]:
        refs = referrers_by_tag(registry, repo, digest)
        docs = [json.loads(artifact(registry, repo, d)) for d in refs if d["artifactType"] == "application/spdx+json"]
        packages = {(p["name"], p.get("versionInfo")) for p in docs[0]["packages"][1:]}
        return refs, packages, docs[0]["packages"][0]

    build(f"{registry.host}/sc/reuse:1", "a")
    digest = skopeo_raw(f"{registry.host}/sc/reuse:1")["manifests"][0]["digest"]
    assert [d["artifactType"] for d in referrers_by_tag(registry, "sc/cache", digest)] == [scan_type]

    err = build(f"{registry.host}/sc/reuse:2", "b")
    assert "reused that image" in err and "the reused image's, attached by the run that built it" in err
    assert skopeo_raw(f"{registry.host}/sc/reuse:2")["manifests"][0]["digest"] == digest
    refs, built, _ = sbom_of("sc/reuse", digest)
    assert sorted(d["artifactType"] for d in refs) == ["application/spdx+json"] + ["application/vnd.in-toto+json"] * 2
    assert ("apt", next(v for n, v in built if n == "apt")) in built and ("demo-pkg", "1.2.3") in built

    layers = {entry["digest"] for entry in json.loads(skopeo_raw_bytes(f"{registry.host}/sc/reuse@{digest}"))["layers"]}
    with FaultProxy(registry.host, []) as proxy:
        err = build(f"{proxy.host}/sc/elsewhere:1", "c", f"{proxy.host}/sc/cache")
        fetched = [r.path.rsplit("/", 1)[-1] for r in proxy.log if r.method == "GET" and "/blobs/" in r.path]
    assert "reused that image" in err and "the scan filed in" in err
    # skopeo's copy of the image may read each layer once; a scan of the layers would read them again
    assert max(fetched.count(layer) for layer in layers) <= 1, "the reused image's layers were read for its SBOM"
    assert skopeo_raw(f"{registry.host}/sc/elsewhere:1")["manifests"][0]["digest"] == digest
    _, from_scan, image_package = sbom_of("sc/elsewhere", digest)
    assert from_scan == built
    assert "sc/elsewhere" in json.dumps(image_package) and "sc/reuse" not in json.dumps(image_package)

    # a layer cache filed by a version that filed no scans: its referrers index is empty
    empty = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": []})
    req = urllib.request.Request(
        f"http://{registry.host}/v2/sc/cache/manifests/sha256-{digest.split(':')[1]}",
        data=empty.encode(),
        method="PUT",
        headers={"Content-Type": "application/vnd.oci.image.index.v1+json"},
    )
    urllib.request.urlopen(req, timeout=30).close()
    assert referrers_by_tag(registry, "sc/cache", digest) == []
    err = build(f"{registry.host}/sc/older:1", "d")
    assert "reused that image" in err and "read from its layers in the registry" in err
    _, from_layers, _ = sbom_of("sc/older", digest)
    assert from_layers == built
    assert [d["artifactType"] for d in referrers_by_tag(registry, "sc/cache", digest)] == [scan_type]
