"""A ``.tekton/`` PipelineRun run as Pipelines-as-Code would run it for an event on a local checkout.

Pipelines-as-Code (openshift-pipelines/pipelines-as-code) reads every ``.tekton/*.yaml``, decides
from the ``pipelinesascode.tekton.dev/on-event``, ``on-target-branch`` and ``on-cel-expression``
annotations whether an event triggers it, replaces ``{{ name }}`` placeholders in the file's text
with the event's values, fetches the tasks named by ``pipelinesascode.tekton.dev/task*``
annotations, then creates the PipelineRun. Here the event is made up from the local git checkout:

- ``push`` to ``--branch`` (default: the checked-out branch): source and target branch are that
  branch, ``revision`` the checkout's HEAD;
- ``pull_request`` from the checked-out branch into ``--branch`` (default ``main``).

``repo_url`` is the checkout's ``origin`` remote unless ``--repo-url`` is given (a step container
must be able to clone it). An unknown placeholder is refused before anything runs.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import os
import re
import secrets
import string
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path

import yaml

from taskimage import log
from taskimage import proc as tools
from taskimage.errors import ToolError, UsageError

PREFIX = "pipelinesascode.tekton.dev/"
EVENTS = ("push", "pull_request")
PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][\w.-]*)\s*\}\}")  # not Go templates ({{.Names}})
IGNORED = ("max-keep-runs", "cancel-in-progress")  # meaningful only on a cluster


@dataclasses.dataclass(frozen=True)
class Event:
    event_type: str
    source_branch: str
    target_branch: str
    revision: str
    repo_url: str
    sender: str
    title: str

    @property
    def repo_owner_name(self) -> tuple[str, str]:
        path = re.sub(r"\.git$", "", self.repo_url.rstrip("/"))
        parts = re.split(r"[/:]", path)
        return (parts[-2] if len(parts) >= 2 else ""), parts[-1]

    def variables(self) -> dict[str, str]:
        owner, name = self.repo_owner_name
        return {
            "repo_url": self.repo_url,
            "source_url": self.repo_url,
            "revision": self.revision,
            "source_branch": self.source_branch,
            "target_branch": self.target_branch,
            "repo_owner": owner,
            "repo_name": name,
            "sender": self.sender,
            "event_type": self.event_type,
            "pull_request_number": "1" if self.event_type == "pull_request" else "",
            "git_auth_secret": "pac-gitauth-" + "".join(secrets.choice(string.ascii_lowercase) for _ in range(6)),
            "target_namespace": "default",
            "trigger_comment": "",
        }


def git_auth_secret(name: str, repo_url: str) -> dict:
    """The Secret Pipelines-as-Code creates for every run and names in ``{{ git_auth_secret }}``:
    ``.gitconfig`` and ``.git-credentials`` for the repository's host. On one machine there is no
    provider token to put in it: the credentials file is empty and the clone goes with the access
    the step already has to the URL (a local or public repository; a private one: bind your own
    directory with ``-w WORKSPACE=DIR``)."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name},
        "type": "Opaque",
        "stringData": {
            ".gitconfig": f'[credential "{repo_url}"]\n\thelper = store\n',
            ".git-credentials": "",
        },
    }


def is_pac(text: str) -> bool:
    """A file Pipelines-as-Code would pick up: its PipelineRun carries PaC annotations."""
    return PREFIX in text and "PipelineRun" in text


def _git(repo: str, *args: str) -> str:
    try:
        return tools.run(["git", "--no-pager", "-C", repo, *args], quiet=True, stream=False, what="git").stdout.strip()
    except ToolError as exc:
        raise UsageError(f"--repo {repo}: git {' '.join(args)} failed: {(exc.tail or [str(exc)])[-1]}") from None


def event_from_checkout(repo: str, event: str, branch: str | None, repo_url: str | None) -> Event:
    if event not in EVENTS:
        raise UsageError(f"--event {event}: accepted: {', '.join(EVENTS)}")
    if not os.path.isdir(repo):
        raise UsageError(f"--repo {repo}: not a directory")
    head = _git(repo, "rev-parse", "HEAD")
    current = _git(repo, "rev-parse", "--abbrev-ref", "HEAD")
    if event == "push":
        source = target = branch or current
    else:
        source, target = current, branch or "main"
    url = repo_url
    if not url:
        try:
            url = tools.run(
                ["git", "--no-pager", "-C", repo, "remote", "get-url", "origin"], quiet=True, stream=False
            ).stdout.strip()
        except ToolError:
            url = ""
        if not url:
            raise UsageError(f"--repo {repo}: no origin remote: give --repo-url (a URL a step container can clone)")
    sender = tools.run(
        ["git", "--no-pager", "-C", repo, "log", "-1", "--format=%an"], quiet=True, stream=False
    ).stdout.strip()
    title = tools.run(
        ["git", "--no-pager", "-C", repo, "log", "-1", "--format=%s"], quiet=True, stream=False
    ).stdout.strip()
    return Event(event, source, target, head, url, sender or "local", title)


def fill(text: str, variables: Mapping[str, str], source: str) -> str:
    unknown = sorted({m.group(1) for m in PLACEHOLDER.finditer(text)} - set(variables))
    if unknown:
        raise UsageError(
            f"{source}: unknown Pipelines-as-Code placeholder {{{{ {unknown[0]} }}}} "
            f"(known: {', '.join(sorted(variables))})"
        )
    return PLACEHOLDER.sub(lambda m: variables[m.group(1)], text)


def _list(value: str) -> list[str]:
    """PaC's annotation lists: ``[a, b]`` or ``a, b``."""
    value = value.strip()
    if value.startswith("[") and value.endswith("]"):
        value = value[1:-1]
    return [v.strip().strip("\"'") for v in value.split(",") if v.strip()]


def _branch_matches(patterns: Sequence[str], branch: str) -> bool:
    short = branch.removeprefix("refs/heads/")
    return any(fnmatch.fnmatchcase(short, p.removeprefix("refs/heads/")) for p in patterns)


def would_trigger(annotations: Mapping[str, str], ev: Event, source: str) -> tuple[bool, str]:
    """(triggered, why) as Pipelines-as-Code decides from the matching annotations."""
    cel = annotations.get(PREFIX + "on-cel-expression")
    if cel:
        from taskimage.tekton.localrun import when

        activation = {
            "event": ev.event_type,
            "event_type": ev.event_type,
            "target_branch": ev.target_branch,
            "source_branch": ev.source_branch,
            "event_title": ev.title,
            "target_url": ev.repo_url,
            "source_url": ev.repo_url,
        }
        ok = when.cel(cel, f"{source}: on-cel-expression", activation)
        return ok, f"on-cel-expression {cel!r} is {'true' if ok else 'false'}"
    events = _list(annotations.get(PREFIX + "on-event", ""))
    branches = _list(annotations.get(PREFIX + "on-target-branch", ""))
    if not events or not branches:
        return False, "it has no on-event and on-target-branch (nor on-cel-expression) annotations"
    if ev.event_type not in events:
        return False, f"on-event {events} does not include {ev.event_type}"
    if not _branch_matches(branches, ev.target_branch):
        return False, f"on-target-branch {branches} does not match {ev.target_branch}"
    return (
        True,
        f"on-event {events} includes {ev.event_type} and on-target-branch {branches} matches {ev.target_branch}",
    )


def remote_tasks(annotations: Mapping[str, str], repo: str, source: str, hub_url: str) -> list[dict]:
    """The objects named by ``pipelinesascode.tekton.dev/task``, ``task-N``, ``pipeline``: a path
    in the repository, an http(s) URL, or a name on Artifact Hub (``name`` or ``name:version``)."""
    out: list[dict] = []
    for key, value in sorted(annotations.items()):
        short = key.removeprefix(PREFIX)
        if not key.startswith(PREFIX) or not re.fullmatch(r"(task|pipeline)(-\d+)?", short):
            continue
        kind = "pipeline" if short.startswith("pipeline") else "task"
        for item in _list(value):
            where = f"{source}: annotation {short} {item}"
            if item.startswith(("http://", "https://")):
                text = _fetch(item, where)
            elif os.path.exists(os.path.join(repo, item)):
                text = Path(repo, item).read_text()
            else:
                name, _, version = item.partition(":")
                url = f"{hub_url}/api/v1/packages/tekton-{kind}/tekton-catalog-{kind}s/{name}" + (
                    f"/{version}" if version else ""
                )
                import json

                body = json.loads(_fetch(url, where))
                text = ((body or {}).get("data") or {}).get("manifestRaw") or ""
                if not text:
                    raise UsageError(f"{where}: Artifact Hub {url} holds no manifest")
            docs = [d for d in yaml.safe_load_all(text) if isinstance(d, dict)]
            log.info(
                f"Pipelines-as-Code remote {kind}: {item} ({', '.join(str((d.get('metadata') or {}).get('name')) for d in docs)})"
            )
            out.extend(docs)
    return out


def _fetch(url: str, where: str) -> str:
    try:
        with urllib.request.urlopen(url, timeout=30) as response:  # noqa: S310 (http(s) from the annotation)
            return response.read().decode("utf-8")
    except OSError as exc:
        raise UsageError(f"{where}: cannot fetch {url}: {getattr(exc, 'reason', exc)}") from None
