import pytest

from taskimage.errors import UsageError
from taskimage.oci.reference import parse_image


@pytest.mark.parametrize(
    "given, registry, repository, tag",
    [
        ("127.0.0.1:5000/team/app", "127.0.0.1:5000", "team/app", "latest"),
        ("127.0.0.1:5000/team/app:v1.2", "127.0.0.1:5000", "team/app", "v1.2"),
        ("quay.io/org/app:1", "quay.io", "org/app", "1"),
        ("localhost/app:dev", "localhost", "app", "dev"),
        ("localhost:5000/a/b/c:x_y-z.1", "localhost:5000", "a/b/c", "x_y-z.1"),
        ("busybox", "docker.io", "library/busybox", "latest"),
        ("user/app:2", "docker.io", "user/app", "2"),
        ("docker://registry.example.com/app:3", "registry.example.com", "app", "3"),
    ],
)
def test_parse_image(given, registry, repository, tag):
    ref = parse_image(given)
    assert (ref.registry, ref.repository, ref.tag) == (registry, repository, tag)
    assert ref.url == f"{registry}/{repository}:{tag}"


@pytest.mark.parametrize(
    "given, message",
    [
        ("", "--image: an image reference is required"),
        (
            "registry.example.com/App:1",
            "--image: invalid image name 'registry.example.com/App:1': repository names must be lower-case",
        ),
        (
            "registry.example.com/app@sha256:" + "a" * 64,
            "--image: 'registry.example.com/app@sha256:" + "a" * 64 + "' is a digest reference; give a tag",
        ),
        ("registry.example.com/app:", "--image: invalid tag ''"),
        ("registry.example.com/app:-bad", "--image: invalid tag '-bad'"),
        ("registry.example.com/ap p", "--image: invalid image name"),
        ("registry.example.com//app", "--image: invalid image name"),
    ],
)
def test_parse_image_rejects(given, message):
    with pytest.raises(UsageError) as err:
        parse_image(given)
    assert str(err.value).startswith(message)


def test_digest_reference_allowed_when_asked():
    ref = parse_image("r.example.com/a@sha256:" + "b" * 64, allow_digest=True)
    assert ref.name == "r.example.com/a"
