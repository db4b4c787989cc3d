"""The context filter (build/ignore.py) against what real buildah copies, and the key built on it."""

from __future__ import annotations

import os
import shutil
import subprocess
import tarfile

import pytest
from conftest import have_tools, need

from taskimage.build import ignore
from taskimage.build import key as buildkey

# Every rule the filter claims to mirror: comments, "!" exceptions, "**", leading and trailing
# "/", last match wins, "?", an excluded dir walked for an exception (vendor) and one that is not
# (cache: "!**/*.keep" is no prefix of it), the ignore file and the Containerfile themselves,
# .git excluded but one file let back in, "!/x" (means "!x"), "  /x" (never matches), whitespace.
IGNORE = """# a comment
*.log
!keep.log
/build/
!build/keep/**
**/node_modules
docs/*.md
!docs/README.md
sub/**/tmp?
.git
!.git/HEAD
.containerignore
  spaced.txt
secret*
!secretsafe
!/secret2
  /spaced2.txt
vendor
!vendor/a/keep.txt
cache
!**/*.keep
x/y
 #not-a-comment
"""

FILES = [
    "Containerfile",
    "a.log",
    "keep.log",
    "deep/b.log",
    "build/out.o",
    "build/keep/k1",
    "build/keep/sub/k2",
    "node_modules/m.js",
    "app/node_modules/n.js",
    "app/main.py",
    "docs/x.md",
    "docs/README.md",
    "docs/deeper/y.md",
    "sub/tmp1",
    "sub/a/b/tmp2",
    "sub/a/tmp22",
    "sub/a/keep",
    ".git/HEAD",
    ".git/config",
    ".git/objects/ab/cdef",
    "spaced.txt",
    "secret1",
    "secret2",
    "spaced2.txt",
    "secretsafe",
    "vendor/a/keep.txt",
    "vendor/a/drop.txt",
    "vendor/b/drop.txt",
    "cache/x.keep",
    "other.keep",
    "x/y/z",
    "x/w",
    "#not-a-comment",
    "emptydir/",
]


def make_context(root) -> None:
    for rel in FILES:
        path = root / rel
        if rel.endswith("/"):
            path.mkdir(parents=True)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(rel)
    (root / "Containerfile").write_text("FROM scratch\nCOPY . /ctx\n")
    (root / ".containerignore").write_text(IGNORE)
    os.symlink("app/main.py", root / "link")
    os.chmod(root / "app" / "main.py", 0o755)


def expected(root) -> set[str]:
    out = set()
    for rel, _ in ignore.walk(root):
        parts = rel.split("/")
        out.update("/".join(parts[: i + 1]) for i in range(len(parts)))  # buildah creates the parents
    return out


def test_filter_matches_what_buildah_copies(tmp_path):
    need(have_tools("buildah"), "buildah is not installed (see .ci/run)")
    need(os.geteuid() == 0, "buildah builds here run as root")
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    make_context(ctx)
    root, runroot, out = tmp_path / "root", tmp_path / "run", tmp_path / "out"
    store = ["--root", str(root), "--runroot", str(runroot), "--storage-driver", "vfs"]
    env = dict(os.environ, BUILDAH_ISOLATION="chroot")
    subprocess.run(["buildah", *store, "build", "-t", "ctx-test", str(ctx)], check=True, env=env, capture_output=True)
    subprocess.run(["buildah", *store, "push", "ctx-test", f"dir:{out}"], check=True, env=env, capture_output=True)
    subprocess.run(["buildah", *store, "rmi", "--all", "--force"], env=env, capture_output=True)
    seen: set[str] = set()
    for blob in out.iterdir():
        try:
            with tarfile.open(blob, "r:*") as tar:
                seen.update(m.name.lstrip("./").rstrip("/") for m in tar.getmembers())
        except tarfile.ReadError:
            continue  # manifest, config, version
    copied = {name[len("ctx/") :] for name in seen if name.startswith("ctx/")}
    assert copied, seen
    assert copied == expected(ctx)
    # and the rules above did decide something: these are in, these are out
    assert {"keep.log", "build/keep/k1", ".git/HEAD", "secretsafe", "vendor/a/keep.txt"} <= copied
    assert {"secret2", "spaced2.txt"} <= copied
    assert (
        not {"a.log", "build/out.o", ".git/config", ".containerignore", "cache/x.keep", "secret1", "#not-a-comment"}
        & copied
    )
    assert {"other.keep", "x/w", "emptydir", "Containerfile", "link"} <= copied
    assert not {"spaced.txt", "x/y/z"} & copied


def test_two_git_clones_of_one_commit_give_one_key(tmp_path):
    need(have_tools("git"), "git is not installed")
    src = tmp_path / "src"
    src.mkdir()
    make_context(src)
    shutil.rmtree(src / ".git")
    (src / ".containerignore").write_text(".git\n*.log\n")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@e", "-c", "init.defaultBranch=main"]
    subprocess.run([*git, "init", "-q", str(src)], check=True)
    subprocess.run([*git, "-C", str(src), "add", "-A"], check=True)
    subprocess.run([*git, "-C", str(src), "commit", "-qm", "one"], check=True)
    clones = []
    for name in ("c1", "c2"):
        subprocess.run(["git", "clone", "-q", str(src), str(tmp_path / name)], check=True)
        clones.append(tmp_path / name)
    os.utime(clones[1] / "app" / "main.py", (1, 1))  # mtimes are not what buildah copies
    assert (clones[0] / ".git").is_dir() and (clones[1] / ".git").is_dir()
    assert buildkey.context_digest(clones[0]) == buildkey.context_digest(clones[1])
    # an ignored file changing does not change the key; a copied one does
    before = buildkey.context_digest(clones[1])
    (clones[1] / "a.log").write_text("changed")
    assert buildkey.context_digest(clones[1]) == before
    (clones[1] / "keep.log").write_text("changed")  # "*.log" here, without the exception: ignored too
    assert buildkey.context_digest(clones[1]) == before
    (clones[1] / "app" / "main.py").write_text("changed")
    assert buildkey.context_digest(clones[1]) != before


def test_without_an_ignore_file_git_is_part_of_the_context(tmp_path):
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "HEAD").write_text("a")
    first = buildkey.context_digest(tmp_path)
    (tmp_path / ".git" / "HEAD").write_text("b")
    assert buildkey.context_digest(tmp_path) != first  # buildah copies .git unless it is ignored


@pytest.mark.parametrize(
    "lines, path, excluded",
    [
        (["a/"], "a/b", True),
        (["/a"], "a", True),
        (["a", "!/a"], "a", False),
        (["  /a"], "a", False),
        (["*", "!a", "a/b"], "a/b", True),
        (["*", "!a", "a/b"], "a/c", False),
        (["**/x"], "x", True),
        (["**/x"], "p/q/x", True),
        (["a/**"], "a", False),
        (["a/**"], "a/b/c", True),
        (["a?c"], "a/c", False),
        (["a\\*"], "a*", True),
        (["a\\*"], "ab", False),
        (["a/../b"], "b", True),
        (["[ab]"], "b", True),
    ],
)
def test_pattern_rules(lines, path, excluded):
    assert ignore.Matcher(ignore.read_lines("\n".join(lines))).excluded(path) is excluded


@pytest.mark.parametrize("pattern", ["!", "a\\", "[", "c++", "(a|b)"])
def test_patterns_that_cannot_be_mirrored_give_no_key(tmp_path, pattern):
    (tmp_path / ".dockerignore").write_text(pattern + "\n")
    with pytest.raises(ignore.IgnoreError):
        buildkey.context_digest(tmp_path)


def test_containerignore_wins_over_dockerignore(tmp_path):
    (tmp_path / ".containerignore").write_text("a\n")
    (tmp_path / ".dockerignore").write_text("b\n")
    (tmp_path / "a").write_text("a")
    (tmp_path / "b").write_text("b")
    assert {rel for rel, _ in ignore.walk(tmp_path)} == {".containerignore", ".dockerignore", "b"}
