"""Every ``taskimage build`` parameter, declared once.

Each :class:`Param` feeds three places that must not drift:

- the CLI (:func:`add_arguments`): flag spelling as buildah spells it, help text, env fallback;
- the Tekton Task (:func:`task_params`, :func:`step_env`, :func:`step_args`): UPPER_SNAKE
  param with the same description, reaching the step only through ``env`` (strings) or
  ``args`` (arrays), never pasted into a script;
- the README parameter tables (:func:`markdown_table`).

Values come from the command line first, then from the environment variable ``TASKIMAGE_<NAME>``
(an empty variable counts as unset, which is what an empty Tekton param gives).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from taskimage.errors import UsageError

ENV_PREFIX = "TASKIMAGE_"
TRUE = {"true", "yes", "1", "on"}
FALSE = {"false", "no", "0", "off"}


@dataclasses.dataclass(frozen=True)
class Param:
    name: str  # Tekton param name (UPPER_SNAKE); also the env var suffix
    flag: str  # CLI flag, buildah's spelling where buildah has the option
    description: str
    type: str = "string"  # string | bool | int | choice | array
    default: Any = ""  # CLI default
    task_default: Any = None  # Tekton default when it differs from the CLI's (None: same)
    choices: tuple[str, ...] = ()
    required: bool = False
    metavar: str | None = None
    short: str | None = None
    secret: bool = False  # never logged, never a Task param
    in_task: bool = True  # False: CLI only (bound to a workspace, or meaningless in a pod)
    task_env_value: str | None = None  # how the Task fills the env var when not from a param

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.name

    @property
    def dest(self) -> str:
        return self.name.lower()

    @property
    def tekton_type(self) -> str:
        return "array" if self.type == "array" else "string"

    @property
    def tekton_default(self) -> Any:
        value = self.default if self.task_default is None else self.task_default
        if self.type == "array":
            return list(value or [])
        if self.type == "bool":
            return "true" if value else "false"
        return str(value)


BUILD_PARAMS: tuple[Param, ...] = (
    Param(
        "IMAGE",
        "--image",
        "Image to push, as REPOSITORY[:TAG] (no tag: latest). A digest is refused: "
        "the manifest list is pushed to a tag.",
        required=True,
        metavar="REPO[:TAG]",
    ),
    Param(
        "ADDITIONAL_TAGS",
        "--tag",
        "More tags for the same manifest list, each a bare TAG (in IMAGE's repository) or "
        "REPOSITORY:TAG on IMAGE's registry, e.g. 1.2, 1, latest. They move after the list is pushed "
        "and read back, never when anything failed; the IMAGE_TAGS result lists every tag moved.",
        type="array",
        default=[],
        metavar="TAG",
        short="-t",
    ),
    Param(
        "PLATFORMS",
        "--platform",
        "Platforms to build, e.g. linux/amd64, linux/arm64, linux/arm/v7, linux/s390x, "
        "linux/ppc64le. Old spellings (linux/x86_64, linux/arm64/v8, armhf) are accepted. "
        "CLI: repeatable, comma lists, or positional arguments; default the host's platform.",
        type="array",
        default=[],
        task_default=["linux/amd64", "linux/arm64"],
        metavar="OS/ARCH[/VARIANT]",
    ),
    Param(
        "CONTEXT",
        "--context",
        "Build context directory (in the Task: relative to the source workspace, which it may not leave).",
        default=".",
        metavar="DIR",
    ),
    Param(
        "SOURCE_ARTIFACT",
        "--source-artifact",
        "Build from this source artifact (REPOSITORY@sha256:..., the source-artifact Task's result), "
        "pulled and verified into an empty directory, instead of the source workspace; CONTEXT and "
        "DOCKERFILE are relative to it. Empty: the source workspace.",
        metavar="REPO@DIGEST",
    ),
    Param(
        "DOCKERFILE",
        "--file",
        "Containerfile path, relative to the context; empty: Containerfile, else Dockerfile.",
        short="-f",
        metavar="PATH",
    ),
    Param(
        "BUILD_ARGS", "--build-arg", "Build arguments, each KEY=VALUE.", type="array", default=[], metavar="KEY=VALUE"
    ),
    Param(
        "LABELS", "--label", "Labels for every image, each KEY=VALUE.", type="array", default=[], metavar="KEY=VALUE"
    ),
    Param(
        "ANNOTATIONS",
        "--annotation",
        "Annotations in buildx's syntax: KEY=VALUE or manifest:KEY=VALUE on every image manifest, "
        "manifest[linux/arm64]:KEY=VALUE on that platform's only (a comma list of platforms accepted), "
        "index:KEY=VALUE on the manifest list (an OCI index; e.g. org.opencontainers.image.source).",
        type="array",
        default=[],
        metavar="[TYPE:]KEY=VALUE",
    ),
    Param(
        "SECRETS",
        "--secret",
        "Build secrets for RUN --mount=type=secret,id=ID (mounted at /run/secrets/ID, never stored in "
        "the image), each id=ID,src=PATH or id=ID,env=VAR or just ID (the file ID). In the Task, PATH is "
        "relative to the build-secrets workspace (e.g. a Secret volume) and may not leave it. A secret the "
        "Containerfile mounts but is not given is an error, unless the mount says required=false.",
        type="array",
        default=[],
        metavar="id=ID,src=PATH",
    ),
    Param(
        "SSH",
        "--ssh",
        "SSH for RUN --mount=type=ssh (e.g. git clone of a private dependency), each ID=KEYFILE[,KEYFILE] "
        "or ID alone (the agent at $SSH_AUTH_SOCK); the id of a mount without id= is default. In the "
        "Task, KEYFILE is relative to the ssh-directory workspace and may not leave it. The key is "
        "offered by an agent buildah runs, never copied into the image.",
        type="array",
        default=[],
        metavar="default|ID=KEYFILE",
    ),
    Param(
        "SOURCE_DATE_EPOCH",
        "--source-date-epoch",
        "Seconds since 1970 for reproducible images: the images' created time, their history and the "
        "time of every file the build writes (buildah --timestamp), also passed as the build arg "
        "SOURCE_DATE_EPOCH for tools that honour it. The Pipelines pass the commit's time (git-clone's "
        "committer-date). Empty: now.",
        metavar="SECONDS",
    ),
    Param("TARGET", "--target", "Build this stage of a multi-stage Containerfile; empty: the last.", metavar="STAGE"),
    Param(
        "FORMAT",
        "--format",
        "Manifest format of the images and the list: oci or docker.",
        type="choice",
        default="oci",
        choices=("oci", "docker"),
    ),
    Param(
        "TLSVERIFY", "--tls-verify", "Verify TLS certificates of registries (pull and push).", type="bool", default=True
    ),
    Param(
        "STORAGE_DRIVER",
        "--storage-driver",
        "Container storage driver: auto chooses overlay where the kernel and "
        "the storage volume support it, else vfs, and logs why.",
        type="choice",
        default="auto",
        choices=("auto", "overlay", "vfs"),
    ),
    Param("SKIP_PUSH", "--skip-push", "Build and verify only; push nothing.", type="bool", default=False),
    Param(
        "CACHE_REPO",
        "--cache-repo",
        "Registry repository used as a layer cache (buildah --layers with "
        "--cache-from/--cache-to) and to file each build under a key of its inputs, so that a run with "
        "unchanged inputs copies that image instead of building (its SBOM made from the package scan filed "
        "with it); empty: no cache. A cache miss or an "
        "unreachable cache never fails the build.",
        metavar="REPO",
    ),
    Param(
        "EXPIRES_AFTER",
        "--expires-after",
        "Label quay.expires-after=DURATION on every image (e.g. 5d; units s, m, h, d, w): Quay deletes "
        "the tags they are pushed to (per-run tags, build-key cache tags) after that time; other "
        "registries: taskimage gc. For throw-away builds only, the label is in the image. Empty: none.",
        metavar="DURATION",
    ),
    Param(
        "RETRY",
        "--retry",
        "How many times to retry a registry push after a transient error (5xx, reset, "
        "timeout); authentication errors are never retried.",
        type="int",
        default=3,
        metavar="N",
    ),
    Param(
        "RETRY_DELAY",
        "--retry-delay",
        "Seconds before the first retry; doubles each time.",
        type="int",
        default=2,
        metavar="SECONDS",
    ),
    Param(
        "EVICT",
        "--evict",
        "Remove each platform's images from the storage as soon as it is pushed (it is "
        "pushed by digest when verified), so the storage holds about one platform at a time, not all; "
        "off keeps them for buildah's layer reuse by the next local build. The Task turns it on: "
        "a pod's storage starts empty and is thrown away.",
        type="bool",
        default=False,
        task_default=True,
    ),
    Param(
        "JOBS",
        "--jobs",
        "Platforms built at once; 0: automatic (the number of CPUs, at most the number of platforms). "
        "Each build holds its base image and twice its biggest layer while buildah commits it: fewer jobs, "
        "less disk at once and more time.",
        type="int",
        default=0,
        metavar="N",
    ),
    Param(
        "SBOM",
        "--sbom",
        "SBOM of every platform image (its OS and language packages, read from the image without "
        "running it) and of the index (its images by digest), attached to them in the registry as OCI "
        "referrers: spdx (SPDX 2.3 JSON), cyclonedx (CycloneDX 1.6 JSON) or none.",
        type="choice",
        default="spdx",
        choices=("spdx", "cyclonedx", "none"),
    ),
    Param(
        "PROVENANCE",
        "--provenance",
        "Attach an in-toto SLSA v1 provenance statement to every platform image and the index "
        "(Containerfile and context digests, build args, base images, versions, times; never secrets).",
        type="bool",
        default=True,
    ),
    # CLI only: in the Task these are bound to workspaces, not params.
    Param(
        "SOURCE_ROOT",
        "--source-root",
        "Directory the context must stay inside (the Task passes its source workspace).",
        in_task=False,
        metavar="DIR",
        task_env_value="$(workspaces.source.path)",
    ),
    Param(
        "SECRETS_ROOT",
        "--secrets-root",
        "Directory relative --secret files are read from, and may not leave (the Task passes its "
        "build-secrets workspace); empty: the working directory, no limit.",
        in_task=False,
        metavar="DIR",
        task_env_value="$(workspaces.build-secrets.path)",
    ),
    Param(
        "SSH_ROOT",
        "--ssh-root",
        "Directory relative --ssh key files are read from, and may not leave (the Task passes its "
        "ssh-directory workspace); empty: the working directory, no limit.",
        in_task=False,
        metavar="DIR",
        task_env_value="$(workspaces.ssh-directory.path)",
    ),
    Param(
        "AUTHFILE",
        "--authfile",
        "Registry credentials: an auth.json file, or a directory holding config.json or "
        ".dockerconfigjson (Tekton's dockerconfig workspace).",
        in_task=False,
        metavar="PATH",
        task_env_value="$(workspaces.dockerconfig.path)",
    ),
    Param(
        "CERT_DIR",
        "--cert-dir",
        "Directory of CA certificates for registries (Tekton's sslcertdir workspace).",
        in_task=False,
        metavar="DIR",
        task_env_value="$(workspaces.sslcertdir.path)",
    ),
    Param(
        "CREDS",
        "--creds",
        "Registry credentials USERNAME:PASSWORD for the target registry (prefer --authfile; never logged).",
        in_task=False,
        secret=True,
        metavar="USER:PASS",
    ),
    Param(
        "ROOT",
        "--root",
        "Container storage root directory (buildah --root); empty: the default.",
        in_task=False,
        metavar="DIR",
    ),
    Param(
        "RUNROOT",
        "--runroot",
        "Container storage run directory (buildah --runroot); empty: the default.",
        in_task=False,
        metavar="DIR",
    ),
    Param(
        "RESULTS_DIR",
        "--results-dir",
        "Where Tekton results are written; default /tekton/results when it exists, else none.",
        in_task=False,
        metavar="DIR",
    ),
)

BY_NAME = {p.name: p for p in BUILD_PARAMS}


def _help(p: Param) -> str:
    text = p.description
    if p.choices:
        text += f" Choices: {', '.join(p.choices)}."
    if p.type == "bool":
        text += f" Default: {'true' if p.default else 'false'}."
    elif p.type not in ("array",) and p.default not in ("", None):
        text += f" Default: {p.default}."
    return text + f" [env {p.env}]"


def add_arguments(
    parser: argparse.ArgumentParser, params: Iterable[Param] = BUILD_PARAMS, *, positional_platforms: bool = True
) -> None:
    """Add each param's flag. Defaults are applied later by :func:`resolve` (env fallback)."""
    for p in params:
        names = [p.flag] + ([p.short] if p.short else [])
        kwargs: dict[str, Any] = {"dest": p.dest, "help": _help(p), "default": None}
        if p.metavar:
            kwargs["metavar"] = p.metavar
        if p.type == "array":
            kwargs.update(action="extend", nargs="*" if p.name != "PLATFORMS" else 1)
            if p.name == "PLATFORMS":
                kwargs.update(nargs=None, action="append")
        elif p.type == "bool":
            kwargs.update(nargs="?", const="true", metavar="true|false")
        parser.add_argument(*names, **kwargs)
    if positional_platforms:
        parser.add_argument(
            "positional_platforms",
            nargs="*",
            metavar="PLATFORM",
            help="more platforms (how Tekton passes the PLATFORMS array)",
        )


def parse_bool(value: str, source: str) -> bool:
    v = str(value).strip().lower()
    if v in TRUE:
        return True
    if v in FALSE:
        return False
    raise UsageError(f"{source}: invalid boolean {value!r}: use true or false")


def resolve(
    args: argparse.Namespace, params: Iterable[Param] = BUILD_PARAMS, env: Mapping[str, str] | None = None
) -> dict[str, tuple[Any, str]]:
    """Each param's value and where it came from (the flag or the env var), typed."""
    if env is None:
        env = os.environ
    values: dict[str, tuple[Any, str]] = {}
    for p in params:
        raw = getattr(args, p.dest, None)
        source = p.flag
        if p.name == "PLATFORMS":
            raw = list(raw or []) + list(getattr(args, "positional_platforms", None) or [])
            raw = raw or None
        if raw is None or raw == []:
            env_value = env.get(p.env, "")
            if env_value.strip():
                source = p.env
                raw = (
                    env_value.replace("\n", ",").split(",")
                    if p.type == "array" and p.name == "PLATFORMS"
                    else ([line for line in env_value.splitlines() if line.strip()] if p.type == "array" else env_value)
                )
            else:
                values[p.name] = (_default(p), p.flag)
                continue
        values[p.name] = (_convert(p, raw, source), source)
    return values


def _default(p: Param) -> Any:
    if p.type == "array":
        return list(p.default or [])
    return p.default


def _convert(p: Param, raw: Any, source: str) -> Any:
    if p.type == "array":
        return [str(v) for v in raw]
    if p.type == "bool":
        return parse_bool(raw, source)
    if p.type == "int":
        try:
            value = int(str(raw).strip())
        except ValueError:
            raise UsageError(f"{source}: invalid number {raw!r}") from None
        if value < 0:
            raise UsageError(f"{source}: must not be negative, got {raw!r}")
        return value
    if p.type == "choice":
        choice = str(raw).strip().lower()
        if choice not in p.choices:
            raise UsageError(f"{source}: invalid value {raw!r}; accepted: {', '.join(p.choices)}")
        return choice
    return str(raw)


# --- Tekton -------------------------------------------------------------------------------


def task_params(params: Iterable[Param] = BUILD_PARAMS) -> list[dict]:
    """The Task's ``spec.params``, in declaration order."""
    out = []
    for p in params:
        if not p.in_task:
            continue
        entry: dict[str, Any] = {"name": p.name, "type": p.tekton_type, "description": p.description}
        if not p.required:
            entry["default"] = p.tekton_default
        out.append(entry)
    return out


def step_env(params: Iterable[Param] = BUILD_PARAMS) -> list[dict]:
    """String params (and workspace bindings) reach the step as ``TASKIMAGE_*`` env vars."""
    env = []
    for p in params:
        if p.type == "array" or p.secret:
            continue
        if p.in_task:
            env.append({"name": p.env, "value": f"$(params.{p.name})"})
        elif p.task_env_value:
            env.append({"name": p.env, "value": p.task_env_value})
    return env


def step_args(command: str = "build", params: Iterable[Param] = BUILD_PARAMS) -> list[str]:
    """Array params reach the step as whole args elements (``$(params.X[*])``).

    Platforms come first as positional arguments; every other array follows its flag,
    which takes any number of values (so an empty array gives the bare flag).
    """
    args = [command]
    arrays = [p for p in params if p.in_task and p.type == "array"]
    for p in arrays:
        if p.name == "PLATFORMS":
            args.append(f"$(params.{p.name}[*])")
    for p in arrays:
        if p.name != "PLATFORMS":
            args += [p.flag, f"$(params.{p.name}[*])"]
    return args


def markdown_table(params: Iterable[Param] = BUILD_PARAMS, *, task: bool = True) -> str:
    """README table: Task params (``task=True``) or CLI flags."""
    rows = []
    if task:
        rows.append("| Param | Type | Default | CLI flag | Description |")
        rows.append("|---|---|---|---|---|")
        for p in params:
            if not p.in_task:
                continue
            default = (
                "(required)"
                if p.required
                else f"`{p.tekton_default}`"
                if p.tekton_default not in ("", [])
                else '`""`'
                if p.type != "array"
                else "`[]`"
            )
            rows.append(f"| `{p.name}` | {p.tekton_type} | {default} | `{p.flag}` | {p.description} |")
    else:
        rows.append("| Flag | Env | Default | Description |")
        rows.append("|---|---|---|---|")
        for p in params:
            default = (
                "(required)"
                if p.required
                else (
                    "true"
                    if p.default is True
                    else "false"
                    if p.default is False
                    else (f"`{p.default}`" if p.default not in ("", [], None) else "")
                )
            )
            rows.append(f"| `{p.flag}` | `{p.env}` | {default} | {p.description} |")
    return "\n".join(rows)


README_BEGIN = "<!-- BEGIN build-flags (generated: python -m taskimage.build.params --readme) -->"
README_END = "<!-- END build-flags -->"


def render_readme(text: str) -> str:
    """``text`` with the CLI flag table between the markers regenerated."""
    start = text.index(README_BEGIN) + len(README_BEGIN)
    end = text.index(README_END)
    return text[:start] + "\n" + markdown_table(task=False) + "\n" + text[end:]


def _main(argv: Sequence[str] | None = None) -> int:
    import sys
    from pathlib import Path

    argv = list(sys.argv[1:] if argv is None else argv)
    readme = Path(__file__).resolve().parents[2] / "README.md"
    text = readme.read_text()
    new = render_readme(text)
    if "--check" in argv:
        if new != text:
            print(
                f"{readme}: the flag table is out of date: run python -m taskimage.build.params --readme",
                file=sys.stderr,
            )
            return 1
        return 0
    if "--readme" in argv:
        readme.write_text(new)
        return 0
    print(markdown_table(task="--task" in argv))
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
