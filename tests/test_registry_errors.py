"""Registry failures classified by what the registry answered (status or error code), one rule
for build, index and bundle; `bundle push` retries transient errors and never a refused login."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import have_tools, need, skopeo_raw_bytes
from faultproxy import MANIFEST_PATH, Fault, FaultProxy

from taskimage import cli
from taskimage.oci import media
from taskimage.oci import registry as remote

TASK = str(Path(__file__).parent / "data" / "bundle" / "task.yaml")

# Last lines skopeo 1.x printed here, against tests/faultproxy.py and a real registry.
SKOPEO = 'time="2026-12-02T21:49:16Z" level=fatal msg="Error parsing image name \\"docker://{h}/a/b:1\\": {m}"'


def skopeo(message: str, host: str = "127.0.0.1:42197") -> list[str]:
    return [SKOPEO.format(h=host, m=message)]


@pytest.mark.parametrize(
    "lines, kind",
    [
        (skopeo("reading manifest 1 in 127.0.0.1:42197/a/b: unauthorized"), remote.AUTH),
        (
            skopeo("reading manifest 1 in r/a/b: received unexpected HTTP status: 503 Service Unavailable"),
            remote.TRANSIENT,
        ),
        (
            skopeo("reading manifest 1 in r/a/b: received unexpected HTTP status: 500 Internal Server Error"),
            remote.TRANSIENT,
        ),
        (skopeo("reading manifest 1 in r/a/b: received unexpected HTTP status: 403 Forbidden"), remote.AUTH),
        (skopeo("reading manifest 1 in 127.0.0.1:38629/a/b: manifest unknown: manifest unknown"), remote.NOT_FOUND),
        (["Error: writing manifest: denied: requested access to the resource is denied"], remote.AUTH),
        (["Error: initializing source: name unknown: repository name not known to registry"], remote.NOT_FOUND),
        (
            skopeo(
                "Error listing repository tags: fetching tags list: invalid status code from registry 404 (Not Found)"
            ),
            remote.NOT_FOUND,
        ),
        (["Error: writing manifest: manifest invalid: manifest invalid"], remote.PERMANENT),
        # a local file the tool could not open is no refused login (it used to be reported as one)
        (skopeo("open /workspace/dockerconfig/config.json: permission denied"), remote.LOCAL),
        (skopeo("mkdir /sys/kernel/x: operation not permitted"), remote.LOCAL),
        # digits of a digest or a port are no status
        (
            skopeo("pinging container registry 127.0.0.1:40401: dial tcp 127.0.0.1:40401: connect: connection refused"),
            remote.TRANSIENT,
        ),
        (["copying blob sha256:401f0a4040140a: happened", "Error: read: connection reset by peer"], remote.TRANSIENT),
        # the last line with a status decides
        (
            [
                "received unexpected HTTP status: 401 Unauthorized",
                "retrying",
                "received unexpected HTTP status: 502 Bad Gateway",
            ],
            remote.TRANSIENT,
        ),
    ],
)
def test_kinds_come_from_the_status_or_error_code(lines, kind):
    assert remote.classify(lines) == kind


def test_one_digest_helper_and_media_table():
    assert media.digest(b"") == "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert media.media_type_of({"manifests": []}) == media.OCI_INDEX
    assert media.media_type_of({"layers": []}) == media.OCI_MANIFEST
    assert media.FAMILY[media.DOCKER_MANIFEST] == "docker" and media.LIST_TYPE["oci"] == media.OCI_INDEX


@pytest.mark.tools
def test_bundle_push_retries_a_transient_error(registry, capsys):
    need(have_tools("skopeo"), "skopeo is not installed (see .ci/run)")
    fault = Fault("503", ("PUT",), MANIFEST_PATH, nth=(1,))
    with FaultProxy(registry.host, [fault]) as proxy:
        ref = f"{proxy.host}/tekton/flaky:1"
        code = cli.main(["bundle", "push", "--tls-verify=false", ref, TASK])
        out, err = capsys.readouterr()
        puts = [r for r in proxy.log if r.method == "PUT" and "/manifests/" in r.path]
    assert code == 0, err
    assert fault.fired == 1 and len(puts) == 2, puts
    assert "retrying" in err
    digest = out.strip().split("@")[1]
    assert media.digest(skopeo_raw_bytes(f"{registry.host}/tekton/flaky:1")) == digest


@pytest.mark.tools
def test_bundle_push_never_retries_a_refused_login(registry, capsys):
    need(have_tools("skopeo"), "skopeo is not installed (see .ci/run)")
    fault = Fault("401", ("PUT",), MANIFEST_PATH)
    with FaultProxy(registry.host, [fault]) as proxy:
        ref = f"{proxy.host}/tekton/refused:1"
        code = cli.main(["bundle", "push", "--tls-verify=false", ref, TASK])
        _, err = capsys.readouterr()
    assert code == 1
    assert fault.fired == 1 and "retrying" not in err
    assert err.strip().splitlines()[-1] == (
        f"ERROR: {proxy.host}/tekton/refused: the registry refused access (no --authfile); "
        "check the credentials for this registry"
    )
