"""Tekton bundles: the image ``tkn bundle push`` writes, built and pushed without tkn.

Unit tests check the builders (tar entry, gzip header, config, manifest, JSON conversion,
ordering, determinism, input errors). The ``tools`` tests push to the real local registry and
read everything back with skopeo itself (not with taskimage's reader): manifest bytes, media
types, config, layer annotations, and each layer's tar entry.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest
import yaml
from conftest import skopeo_raw, skopeo_raw_bytes, tag_exists

from taskimage import cli
from taskimage.errors import UsageError
from taskimage.oci import registry as remote
from taskimage.tekton import bundle

DATA = Path(__file__).parent / "data" / "bundle"
TASK = str(DATA / "task.yaml")
PIPELINE = str(DATA / "pipeline.yaml")


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def load_yaml(path: str) -> list[dict]:
    """The documents as Tekton sees them: dates are strings (go-yaml keeps them so)."""
    return [json.loads(json.dumps(d, default=str)) for d in yaml.safe_load_all(Path(path).read_text()) if d]


def tekton_task(name: str, version: str = "v1") -> str:
    return f"apiVersion: tekton.dev/{version}\nkind: Task\nmetadata:\n  name: {name}\nspec:\n  steps: [{{name: s, image: busybox, script: 'true'}}]\n"


def tar_members(blob: bytes) -> list[tuple[tarfile.TarInfo, bytes]]:
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(blob)), mode="r:") as tar:
        return [(m, tar.extractfile(m).read() if m.isfile() else b"") for m in tar.getmembers()]


# --- unit: the builders ----------------------------------------------------------------------


def test_layer_tar_is_one_regular_file_like_go_archive_tar():
    content = b'{"kind":"Task"}' * 50
    data = bundle.layer_tar("hello", content)
    # header + content padded to 512 + two zero blocks, and no 10 KiB record padding (Go's Close).
    assert len(data) == 512 + (len(content) + 511) // 512 * 512 + 1024
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
        members = tar.getmembers()
        assert [m.name for m in members] == ["hello"]
        m = members[0]
        assert m.isreg() and m.mode == 0o600 and m.size == len(content)
        assert (m.uid, m.gid, m.uname, m.gname, m.mtime) == (0, 0, "", "", 0)
        assert tar.extractfile(m).read() == content
    assert data[257:265] == b"ustar\x0000"  # USTAR, as Go picks when the name fits


def test_gzip_has_go_header_and_round_trips():
    blob = bundle.gzip_bytes(b"x" * 5000)
    # magic, deflate, no flags, mtime 0, XFL 4 (BestSpeed, tarball.LayerFromReader's level), OS 255
    assert blob[:10] == b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x04\xff"
    assert gzip.decompress(blob) == b"x" * 5000
    assert bundle.gzip_bytes(b"x" * 5000) == blob


def test_manifest_and_config_are_what_tkn_writes():
    objects = bundle.load_objects([TASK, PIPELINE])
    built = bundle.build_bundle(objects, created="1970-01-01T00:00:00Z")
    manifest = json.loads(built.manifest)
    assert list(manifest) == ["schemaVersion", "mediaType", "config", "layers"]
    assert manifest["schemaVersion"] == 2
    assert manifest["mediaType"] == "application/vnd.docker.distribution.manifest.v2+json"
    assert manifest["config"] == {
        "mediaType": "application/vnd.docker.container.image.v1+json",
        "size": len(built.config),
        "digest": sha256(built.config),
    }
    config = json.loads(built.config)
    # go-containerregistry's empty.Image after mutate.Append + mutate.CreatedAt, field order kept.
    assert list(config) == ["architecture", "created", "history", "os", "rootfs", "config"]
    assert config["architecture"] == "" and config["os"] == "" and config["config"] == {}
    assert config["created"] == "1970-01-01T00:00:00Z"
    assert config["history"] == [{"created": "0001-01-01T00:00:00Z"}] * 2
    assert config["rootfs"]["type"] == "layers"
    assert config["rootfs"]["diff_ids"] == [layer.diff_id for layer in built.layers]
    for layer, desc in zip(built.layers, manifest["layers"], strict=True):
        assert desc["mediaType"] == "application/vnd.docker.image.rootfs.diff.tar.gzip"
        assert desc["digest"] == sha256(layer.blob) and desc["size"] == len(layer.blob)
        assert sha256(gzip.decompress(layer.blob)) == layer.diff_id
    assert {tuple(sorted(d["annotations"].items())) for d in manifest["layers"]} == {
        (("dev.tekton.image.apiVersion", "v1"), ("dev.tekton.image.kind", "task"), ("dev.tekton.image.name", "hello")),
        (
            ("dev.tekton.image.apiVersion", "v1"),
            ("dev.tekton.image.kind", "pipeline"),
            ("dev.tekton.image.name", "hello-pipeline"),
        ),
    }
    # Compact JSON, like Go's json.Marshal: no spaces anywhere.
    assert b" " not in built.manifest and b": " not in built.config


def test_same_input_same_bytes_whatever_the_file_order(monkeypatch):
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    one = bundle.build_bundle(bundle.load_objects([TASK, PIPELINE]))
    two = bundle.build_bundle(bundle.load_objects([PIPELINE, TASK]))
    assert one.manifest == two.manifest and one.config == two.config
    assert [layer.blob for layer in one.layers] == [layer.blob for layer in two.layers]
    assert json.loads(one.config)["created"] == "1970-01-01T00:00:00Z"
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    later = bundle.build_bundle(bundle.load_objects([TASK, PIPELINE]))
    assert json.loads(later.config)["created"] == "2023-11-14T22:13:20Z"
    assert later.digest != one.digest
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "yesterday")
    with pytest.raises(UsageError, match="SOURCE_DATE_EPOCH"):
        bundle.build_bundle(bundle.load_objects([TASK]))


def test_files_are_ordered_by_content_hash_documents_keep_their_order(tmp_path):
    files = []
    for name in ("alpha", "beta", "gamma", "delta"):
        path = tmp_path / f"{name}.yaml"
        # two documents per file, in an order that is not alphabetical
        path.write_text(tekton_task(f"{name}-2") + "---\n" + tekton_task(f"{name}-1"))
        files.append(str(path))
    expected_files = sorted(files, key=lambda f: hashlib.sha256(Path(f).read_bytes()).digest())
    expected = [n for f in expected_files for n in (f"{Path(f).stem}-2", f"{Path(f).stem}-1")]
    for order in (files, files[::-1], files[1:] + files[:1]):
        objects = bundle.load_objects(order)
        assert [o.name for o in objects] == expected
        manifest = json.loads(bundle.build_bundle(objects).manifest)
        assert [d["annotations"]["dev.tekton.image.name"] for d in manifest["layers"]] == expected


def test_yaml_becomes_json_as_kubernetes_yamltojson_writes_it():
    (task,) = bundle.load_objects([TASK])
    text = task.content.decode()
    assert json.loads(text) == load_yaml(TASK)[0]
    assert text.startswith('{"apiVersion":"tekton.dev/v1","kind":"Task","metadata":{"annotations"')
    assert "\\u0026" in text and "\\u003chtml\\u003e" in text  # Go escapes & < >
    assert '"value":"2024-01-01"' in text  # a date stays a string, as with go-yaml
    assert '"cpu":0.5' in text
    assert bundle.go_json({"b": [1.0, 1e-7, 2.5e21, 100.25], 1: True, "é": "\u2028"}) == (
        '{"1":true,"b":[1,1e-7,2.5e+21,100.25],"é":"\\u2028"}'.encode()
    )


def test_json_input_is_kept_byte_for_byte():
    (task,) = bundle.load_objects([str(DATA / "task.json")])
    assert task.content == (DATA / "task.json").read_bytes().strip()
    assert (task.api_version, task.version, task.kind_annotation, task.name) == (
        "tekton.dev/v1beta1",
        "v1beta1",
        "task",
        "hello",
    )


def test_same_name_in_two_api_versions_is_allowed(tmp_path):
    path = tmp_path / "both.yaml"
    path.write_text(tekton_task("same", "v1") + "---\n" + tekton_task("same", "v1beta1"))
    assert [o.version for o in bundle.load_objects([str(path)])] == ["v1", "v1beta1"]


def bad_inputs(tmp: Path) -> list[tuple[list[str], str]]:
    """(files, the one-line message expected) for every kind of bad input."""
    many = tmp / "many.yaml"
    many.write_text("---\n".join(tekton_task(f"t{i:02d}") for i in range(21)))
    twenty_a, twenty_b = tmp / "ten-a.yaml", tmp / "ten-b.yaml"
    twenty_a.write_text("---\n".join(tekton_task(f"a{i}") for i in range(10)))
    twenty_b.write_text("---\n".join(tekton_task(f"b{i}") for i in range(11)))
    bad_json = tmp / "bad.json"
    bad_json.write_text('{"apiVersion": "tekton.dev/v1", "kind": "Task",,}')
    copy = tmp / "task-copy.yaml"
    shutil.copy(TASK, copy)
    listing = tmp / "list.yaml"
    listing.write_text("- " + tekton_task("x").replace("\n", "\n  "))
    d = DATA
    return [
        (
            [str(d / "not-tekton.yaml")],
            f"{d}/not-tekton.yaml: document 2: not a Tekton object: DaemonSet of apiVersion 'apps/v1'",
        ),
        ([str(d / "no-name.yaml")], f"{d}/no-name.yaml: document 1: Pipeline has no metadata.name"),
        (
            [str(d / "duplicate.yaml")],
            f"{d}/duplicate.yaml: document 2: duplicate tekton.dev/v1 Task 'twice' (also in {d}/duplicate.yaml: document 1)",
        ),
        ([TASK, str(copy)], "duplicate tekton.dev/v1 Task 'hello'"),
        ([str(d / "broken.yaml")], f"{d}/broken.yaml:9: YAML syntax error:"),
        ([str(d / "unknown-kind.yaml")], f"{d}/unknown-kind.yaml: document 1: unknown Tekton kind 'Tusk'"),
        ([str(many)], f"{many}: document 21: 21 objects, a bundle holds at most 20"),
        ([str(twenty_a), str(twenty_b)], "21 objects, a bundle holds at most 20"),
        ([str(bad_json)], f"{bad_json}: document 1: invalid JSON:"),
        ([str(listing)], f"{listing}: document 1: not a Tekton object (a list"),
        ([TASK, str(d / "missing.yaml")], f"{d}/missing.yaml: no such file"),
    ]


BAD_IDS = [
    "not-tekton",
    "no-name",
    "duplicate",
    "duplicate-across-files",
    "yaml-error",
    "unknown-kind",
    "21-objects",
    "21-objects-in-two-files",
    "json-error",
    "yaml-list",
    "missing-file",
]


@pytest.mark.parametrize("case", range(len(BAD_IDS)), ids=BAD_IDS)
def test_bad_input_is_a_usage_error_naming_file_and_document(tmp_path, case):
    files, message = bad_inputs(tmp_path)[case]
    with pytest.raises(UsageError) as info:
        bundle.load_objects(files)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_twenty_objects_are_fine(tmp_path):
    path = tmp_path / "twenty.yaml"
    path.write_text("---\n".join(tekton_task(f"t{i:02d}") for i in range(20)))
    assert len(bundle.build_bundle(bundle.load_objects([str(path)])).layers) == 20


def test_authfile_may_be_a_dockerconfig_workspace(tmp_path):
    (tmp_path / "secret").mkdir()
    (tmp_path / "secret" / ".dockerconfigjson").write_text('{"auths": {}}')
    assert bundle.resolve_authfile(str(tmp_path / "secret")) == str(tmp_path / "secret" / ".dockerconfigjson")
    (tmp_path / "secret" / "config.json").write_text('{"auths": {}}')
    assert bundle.resolve_authfile(str(tmp_path / "secret")) == str(tmp_path / "secret" / "config.json")
    with pytest.raises(UsageError, match="holds none of config.json, .dockerconfigjson"):
        bundle.resolve_authfile(str(tmp_path))
    with pytest.raises(UsageError, match="does not exist"):
        bundle.resolve_authfile(str(tmp_path / "nope.json"))


def test_skopeo_argv_carries_the_registry_flags(tmp_path):
    options = remote.Access(tls_verify=False, authfile="/ws/config.json", cert_dir="/certs")
    ref = bundle.parse_image("registry.example.com/team/bundle:1")
    argv = bundle.skopeo_push_argv(tmp_path, ref, options)
    assert argv[:4] == ["skopeo", "copy", "--quiet", "--preserve-digests"]
    assert argv[4:7] == ["--dest-tls-verify=false", "--dest-authfile=/ws/config.json", "--dest-cert-dir=/certs"]
    assert argv[-2:] == [f"dir:{tmp_path}", "docker://registry.example.com/team/bundle:1"]
    assert bundle.skopeo_inspect_raw_argv("r/x:1", remote.Access())[3:] == [
        "--tls-verify=true",
        "docker://r/x:1",
    ]


# --- real registry ---------------------------------------------------------------------------


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def pushed(registry, tmp_path_factory):
    """The Task + Pipeline bundle pushed once with `taskimage bundle push`."""
    tmp = tmp_path_factory.mktemp("bundle")
    ref = f"{registry.host}/tekton/hello-bundle:0.1"
    digestfile = tmp / "digest"
    capture = io.StringIO()
    import contextlib

    with contextlib.redirect_stderr(capture), contextlib.redirect_stdout(io.StringIO()) as out:
        code = cli.main(["bundle", "push", "--tls-verify=false", "--digestfile", str(digestfile), ref, TASK, PIPELINE])
    assert code == 0, capture.getvalue()
    return {
        "ref": ref,
        "stdout": out.getvalue(),
        "digest": digestfile.read_text(),
        "log": capture.getvalue(),
        "tmp": tmp,
    }


@pytest.mark.tools
def test_push_prints_repo_at_digest_and_the_registry_holds_those_bytes(pushed, registry):
    digest = pushed["digest"]
    assert pushed["stdout"] == f"{registry.host}/tekton/hello-bundle@{digest}\n"
    raw = skopeo_raw_bytes(pushed["ref"])
    assert sha256(raw) == digest  # skopeo pushed our manifest unchanged
    expected = bundle.build_bundle(bundle.load_objects([TASK, PIPELINE]))
    assert raw == expected.manifest


@pytest.mark.tools
def test_pushed_manifest_config_and_layers_read_back_with_skopeo(pushed, tmp_path):
    manifest = skopeo_raw(pushed["ref"])
    assert manifest["mediaType"] == "application/vnd.docker.distribution.manifest.v2+json"
    assert "manifests" not in manifest  # an image, not an index
    assert manifest["config"]["mediaType"] == "application/vnd.docker.container.image.v1+json"
    config = skopeo_raw(pushed["ref"], config=True)
    assert config["architecture"] == "" and config["os"] == "" and config["config"] == {}
    assert config["created"] == "1970-01-01T00:00:00Z"
    assert [d["mediaType"] for d in manifest["layers"]] == ["application/vnd.docker.image.rootfs.diff.tar.gzip"] * 2
    inputs = {(d["kind"].lower(), d["metadata"]["name"]): d for d in load_yaml(TASK) + load_yaml(PIPELINE)}
    assert {
        (d["annotations"]["dev.tekton.image.kind"], d["annotations"]["dev.tekton.image.name"])
        for d in manifest["layers"]
    } == set(inputs)
    # Pull the blobs with skopeo itself (dir: keeps them as stored) and open each layer.
    pulled = tmp_path / "pulled"
    repo = pushed["ref"].rsplit(":", 1)[0]
    subprocess.run(
        ["skopeo", "copy", "--quiet", "--src-tls-verify=false", f"docker://{repo}@{pushed['digest']}", f"dir:{pulled}"],
        check=True,
    )
    diff_ids = []
    for desc in manifest["layers"]:
        annotations = desc["annotations"]
        assert set(annotations) == {"dev.tekton.image.apiVersion", "dev.tekton.image.kind", "dev.tekton.image.name"}
        assert annotations["dev.tekton.image.apiVersion"] == "v1"
        blob = (pulled / desc["digest"].split(":")[1]).read_bytes()
        assert sha256(blob) == desc["digest"] and len(blob) == desc["size"]
        diff_ids.append(sha256(gzip.decompress(blob)))
        members = tar_members(blob)
        assert len(members) == 1
        member, content = members[0]
        assert member.name == annotations["dev.tekton.image.name"]
        assert member.isreg() and member.mode == 0o600
        assert json.loads(content) == inputs[(annotations["dev.tekton.image.kind"], member.name)]
    assert config["rootfs"]["diff_ids"] == diff_ids


@pytest.mark.tools
def test_bundle_list_prints_kind_apiversion_name(pushed, capsys):
    code, out, err = run_cli(capsys, "bundle", "list", "--tls-verify=false", pushed["ref"])
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split() == ["KIND", "APIVERSION", "NAME"]
    assert sorted(line.split() for line in lines[2:]) == [["pipeline", "v1", "hello-pipeline"], ["task", "v1", "hello"]]


@pytest.mark.tools
def test_fetch_object_returns_the_object(pushed):
    task = bundle.fetch_object(pushed["ref"], "hello", tls_verify=False)
    assert task == load_yaml(TASK)[0]
    pipeline = bundle.fetch_object("docker://" + pushed["ref"], "hello-pipeline", "Pipeline", tls_verify=False)
    assert pipeline == load_yaml(PIPELINE)[0]
    with pytest.raises(bundle.TaskimageError, match="no task named 'nope'.*holds"):
        bundle.fetch_object(pushed["ref"], "nope", tls_verify=False)


@pytest.mark.tools
def test_second_push_gives_the_same_digest(pushed, registry, capsys):
    ref = f"{registry.host}/tekton/hello-bundle:again"
    code, out, err = run_cli(capsys, "bundle", "push", "--tls-verify=false", ref, PIPELINE, TASK)
    assert code == 0, err
    assert out.strip() == f"{registry.host}/tekton/hello-bundle@{pushed['digest']}"
    assert sha256(skopeo_raw_bytes(ref)) == pushed["digest"]


@pytest.mark.tools
@pytest.mark.parametrize("case", range(len(BAD_IDS)), ids=BAD_IDS)
def test_bad_input_exits_2_and_pushes_nothing(registry, tmp_path, capsys, case):
    files, message = bad_inputs(tmp_path)[case]
    ref = f"{registry.host}/tekton/bad-{BAD_IDS[case]}:1"
    code, out, err = run_cli(capsys, "bundle", "push", "--tls-verify=false", ref, *files)
    assert code == 2
    assert out == ""
    errors = [line for line in err.splitlines() if line.startswith("ERROR: ")]
    assert len(errors) == 1 and message in errors[0]
    assert not tag_exists(ref)


@pytest.mark.tools
def test_bad_registry_flags_are_usage_errors(registry, tmp_path, capsys):
    ref = f"{registry.host}/tekton/flags:1"
    code, _, err = run_cli(capsys, "bundle", "push", "--tls-verify=maybe", ref, TASK)
    assert code == 2 and "--tls-verify: invalid boolean 'maybe'" in err
    code, _, err = run_cli(
        capsys, "bundle", "push", "--tls-verify=false", "--authfile", str(tmp_path / "none"), ref, TASK
    )
    assert code == 2 and "--authfile" in err
    code, _, err = run_cli(
        capsys, "bundle", "push", "--tls-verify=false", f"{registry.host}/tekton/flags@sha256:{'0' * 64}", TASK
    )
    assert code == 2 and "digest reference" in err
    assert not tag_exists(ref)


@pytest.fixture(scope="module")
def auth_registry(registry, tmp_path_factory):
    """A second real registry that wants a login (htpasswd), and a Tekton dockerconfig
    workspace directory holding .dockerconfigjson for it."""
    import base64

    from conftest import htpasswd_line

    from taskimage.dev import env as devenv

    root = tmp_path_factory.mktemp("auth-registry")
    password = "s3cret-Bundle-pass"
    (root / "htpasswd").write_text(htpasswd_line("tekton", password))
    reg = devenv.LocalRegistry(root, htpasswd=str(root / "htpasswd")).start()
    workspace = root / "dockerconfig"
    workspace.mkdir()
    token = base64.b64encode(f"tekton:{password}".encode()).decode()
    (workspace / ".dockerconfigjson").write_text(json.dumps({"auths": {reg.host: {"auth": token}}}))
    yield reg, workspace, password
    reg.stop()


@pytest.mark.tools
def test_push_list_and_fetch_with_a_dockerconfig_workspace(auth_registry, capsys):
    reg, workspace, password = auth_registry
    ref = f"{reg.host}/tekton/private:1"
    code, out, err = run_cli(capsys, "bundle", "push", "--tls-verify=false", ref, TASK)
    assert code == 1 and out == ""
    assert f"ERROR: {reg.host}/tekton/private: the registry refused access (no --authfile)" in err
    code, out, err = run_cli(capsys, "bundle", "push", "--tls-verify=false", "--authfile", str(workspace), ref, TASK)
    assert code == 0, err
    digest = out.strip().split("@")[1]
    assert password not in err and password not in out
    raw = subprocess.run(
        [
            "skopeo",
            "inspect",
            "--raw",
            "--tls-verify=false",
            f"--authfile={workspace / '.dockerconfigjson'}",
            f"docker://{ref}",
        ],
        check=True,
        capture_output=True,
    ).stdout
    assert sha256(raw) == digest
    code, out, err = run_cli(capsys, "bundle", "list", "--tls-verify=false", "--authfile", str(workspace), ref)
    assert code == 0 and out.splitlines()[2].split() == ["task", "v1", "hello"]
    assert bundle.fetch_object(ref, "hello", tls_verify=False, authfile=str(workspace)) == load_yaml(TASK)[0]
