"""Property-based tests (hypothesis) for the parsers every user input goes through.

Platforms and image references: valid spellings round-trip and normalize idempotently; any text
at all gives either a value or a UsageError whose message is one line starting with the source
it names (never another exception). Also the registry-error classifier: no digest is a 401.
"""

from __future__ import annotations

import re
import string

from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from taskimage.errors import UsageError
from taskimage.oci import platforms as P
from taskimage.oci.reference import DEFAULT_REGISTRY, ImageReference, parse_image
from taskimage.oci.registry import auth_refused

settings.register_profile("taskimage", max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("taskimage")

SOURCES = st.sampled_from(["--platform", "TASKIMAGE_PLATFORMS", "--image", "TASKIMAGE_IMAGE", "PLATFORMS[2]"])


def mixed_case(word: str) -> st.SearchStrategy[str]:
    return st.lists(st.booleans(), min_size=len(word), max_size=len(word)).map(
        lambda flips: "".join(c.upper() if f else c for c, f in zip(word, flips, strict=True))
    )


@st.composite
def platform_spellings(draw) -> str:
    """Any accepted spelling of a platform: aliases, optional os, variants, case, blanks."""
    word = draw(st.sampled_from(sorted(P._ARCH_ALIASES)))
    arch, implied = P._ARCH_ALIASES[word]
    allowed, _ = P._VARIANTS.get(arch, ((), None))
    variants = [None] + ([implied] if implied else list(allowed))
    variant = draw(st.sampled_from(variants))
    with_os = draw(st.booleans()) or variant is not None
    text = (draw(mixed_case("linux")) + "/" if with_os else "") + draw(mixed_case(word))
    if variant:
        text += "/" + variant
    return draw(st.sampled_from(["", " ", "\t"])) + text + draw(st.sampled_from(["", " "]))


def one_line_usage_error(exc: UsageError, source: str) -> None:
    message = str(exc)
    assert "\n" not in message and "\r" not in message, message
    assert message.startswith(source + ": "), message


# --- platforms ----------------------------------------------------------------------------


@given(platform_spellings())
@example("linux/x86_64")
@example("linux/arm64/v8")
@example("armhf")
def test_normalized_platform_round_trips_and_is_idempotent(text):
    p = P.normalize(text)
    assert P.normalize(str(p)) == p
    assert str(P.normalize(str(p))) == str(p)
    assert str(p) == str(p).lower() and str(p).startswith("linux/")
    assert p.matches_config(p.os, p.arch, p.variant)
    assert p.arch in P.ARCHES
    assert P.arch_of_elf(P.elf_header(p.arch)) == p.arch
    assert "/" not in p.slug


@given(st.lists(platform_spellings(), min_size=1, max_size=6), SOURCES)
def test_platform_lists_keep_order_or_name_the_duplicate(items, source):
    normalized = [P.normalize(i) for i in items]
    joined = [",".join(items)]  # a comma list is the same as separate values
    if len(set(normalized)) == len(normalized):
        assert P.parse_platforms(items, source=source) == normalized
        assert P.parse_platforms(joined + [""], source=source) == normalized  # [""]: Tekton's empty array
    else:
        for given_items in (items, joined):
            try:
                P.parse_platforms(given_items, source=source)
            except UsageError as exc:
                one_line_usage_error(exc, source)
                assert "duplicate platform" in str(exc)
            else:
                raise AssertionError("duplicates accepted")


@given(st.text(max_size=40), SOURCES)
@example("linux//amd64", "--platform")
@example("linux/arm64/v7\n", "--platform")
@example("\x00", "--platform")
def test_any_text_is_a_platform_or_a_one_line_usage_error(text, source):
    try:
        p = P.normalize(text, source=source)
    except UsageError as exc:
        one_line_usage_error(exc, source)
        return
    assert P.normalize(str(p)) == p


@given(st.lists(st.text(alphabet=string.ascii_letters + string.digits + "/_-,. \n", max_size=20), max_size=5), SOURCES)
def test_any_list_parses_or_fails_with_one_line(values, source):
    try:
        result = P.parse_platforms(values, source=source)
    except UsageError as exc:
        one_line_usage_error(exc, source)
        return
    assert len(set(result)) == len(result)


# --- image references -----------------------------------------------------------------------

COMPONENT = st.from_regex(re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+){0,2}"), fullmatch=True).filter(
    lambda c: len(c) <= 30
)
TAG = st.from_regex(re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,40}"), fullmatch=True)
LABEL = st.from_regex(re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,10}[A-Za-z0-9])?"), fullmatch=True)


@st.composite
def registries(draw) -> str:
    kind = draw(st.sampled_from(["domain", "localhost", "ip"]))
    if kind == "localhost":
        host = "localhost"
    elif kind == "ip":
        host = ".".join(str(draw(st.integers(0, 255))) for _ in range(4))
    else:
        host = ".".join(draw(st.lists(LABEL, min_size=2, max_size=3)))
    port = draw(st.one_of(st.none(), st.integers(1, 65535)))
    return host if port is None else f"{host}:{port}"


@st.composite
def references(draw) -> ImageReference:
    repo = "/".join(draw(st.lists(COMPONENT, min_size=1, max_size=3)))
    ref = ImageReference(draw(registries()), repo, draw(TAG))
    assume(len(ref.name) <= 255)
    return ref


@given(references(), st.booleans(), st.booleans())
def test_reference_round_trips(ref, explicit_tag, scheme):
    text = ref.url if explicit_tag or ref.tag != "latest" else ref.name
    parsed = parse_image(("docker://" if scheme else "") + text)
    assert parsed == ref
    assert parse_image(parsed.url) == parsed  # normalization is idempotent
    assert parse_image(ref.name).tag == "latest"


@given(references(), st.text(alphabet="0123456789abcdef", min_size=64, max_size=64), SOURCES)
def test_a_digest_is_refused_for_pushing_and_ignored_when_allowed(ref, hexdigits, source):
    pinned = ref.with_digest("sha256:" + hexdigits)
    try:
        parse_image(pinned, source=source)
    except UsageError as exc:
        one_line_usage_error(exc, source)
        assert "is a digest reference" in str(exc)
    else:
        raise AssertionError("digest accepted for pushing")
    assert parse_image(pinned, allow_digest=True).name == ref.name


@given(references(), st.data())
def test_upper_case_in_the_repository_is_named(ref, data):
    letters = [i for i, c in enumerate(ref.repository) if c.isalpha()]
    assume(letters)
    i = data.draw(st.sampled_from(letters))
    shouted = ref.repository[:i] + ref.repository[i].upper() + ref.repository[i + 1 :]
    text = f"{ref.registry}/{shouted}:{ref.tag}"
    try:
        parse_image(text)
    except UsageError as exc:
        assert str(exc) == f"--image: invalid image name {text!r}: repository names must be lower-case"
    else:
        raise AssertionError("upper case accepted")


@given(COMPONENT.filter(lambda c: "." not in c), st.one_of(st.none(), COMPONENT.filter(lambda c: "." not in c)))
def test_docker_hub_short_names_are_normalized(name, namespace):
    text = name if namespace is None else f"{namespace}/{name}"
    ref = parse_image(text)
    assert ref.registry == DEFAULT_REGISTRY
    assert ref.repository == (f"library/{name}" if namespace is None else text)
    assert parse_image(ref.url) == ref


@given(st.text(max_size=80), SOURCES)
@example("Registry.Example.com/app", "--image")
@example("r.example.com/app:tag:tag", "--image")
@example("[::1]:5000/app", "--image")
@example("a" * 300, "--image")
@example("r.example.com/app\n:1", "--image")
def test_any_text_is_a_reference_or_a_one_line_usage_error(text, source):
    try:
        ref = parse_image(text, source=source)
    except UsageError as exc:
        one_line_usage_error(exc, source)
        return
    assert parse_image(ref.url) == ref
    assert ref.repository == ref.repository.lower()
    assert len(ref.name) <= 255


@given(references(), st.sampled_from(["\n", "\r\n"]))
@example(ImageReference("r.example.com", "app", "1"), "\n")
def test_no_line_break_survives_into_a_reference(ref, brk):
    text = f"{ref.name}{brk}:{ref.tag}"
    try:
        parsed = parse_image(text)
    except UsageError as exc:
        one_line_usage_error(exc, "--image")
        return
    assert re.fullmatch(r"[\x21-\x7e]+", parsed.url), repr(parsed)


# --- registry error classification -----------------------------------------------------------


@given(
    st.lists(st.text(alphabet="0123456789abcdef", min_size=64, max_size=64), min_size=1, max_size=4),
    st.sampled_from(
        [
            "500 Internal Server Error",
            "502 Bad Gateway",
            "503 Service Unavailable",
            "read: connection reset by peer",
            "manifest unknown",
        ]
    ),
)
@example(["0" * 61 + "401"], "503 Service Unavailable")
@example(["401" + "0" * 61], "503 Service Unavailable")
def test_digests_in_a_transient_error_never_look_like_a_refused_login(digests, problem):
    lines = [f"Copying blob sha256:{d}" for d in digests]
    lines.append(
        f"Error: writing manifest sha256:{digests[0]} to r:5000/app: received unexpected HTTP status: {problem}"
    )
    assert not auth_refused(lines)
    assert auth_refused(lines + ["Error: ... received unexpected HTTP status: 401 Unauthorized"])
    assert auth_refused(["unauthorized: authentication required"])
