import sys

from taskimage import cli


def test_missing_optional_dependency_names_the_extra(monkeypatch, capsys):
    for name in [
        m
        for m in sys.modules
        if m == "kubernetes" or m.startswith("kubernetes.") or m.startswith("taskimage.tekton.kube")
    ]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "kubernetes", None)  # as if not installed
    assert cli.main(["logs", "some-run"]) == 1
    assert capsys.readouterr().err.strip().endswith("taskimage logs needs kubernetes: pip install 'taskimage[cluster]'")


def test_unknown_command_is_a_usage_error(capsys):
    assert cli.main(["frobnicate"]) == 2
    assert "invalid choice: 'frobnicate'" in capsys.readouterr().err


def test_only_the_named_command_is_registered():
    parser = cli.build_parser("build")
    sub = cli._subparsers(parser)
    assert list(sub.choices) == ["build"]
    assert set(cli._subparsers(cli.build_parser()).choices) >= {
        "build",
        "index",
        "binfmt",
        "bundle",
        "lint",
        "run",
        "cluster",
        "pipeline",
        "logs",
        "dev",
    }


def test_a_bare_boolean_flag_is_true_and_takes_only_a_boolean_word():
    """As in buildah, `--evict linux/amd64` is --evict=true plus a platform; `--tls-verify false`
    (and `=false`) still set the value."""
    from taskimage.build import params

    def parse(*argv):
        args = cli._parse(cli.build_parser("build"), ["build", "--image", "r/x", *argv])
        return params.resolve(args)

    v = parse("--evict", "linux/amd64", "--skip-push", "--tls-verify", "false", "linux/arm64")
    assert v["EVICT"][0] is True and v["SKIP_PUSH"][0] is True and v["TLSVERIFY"][0] is False
    assert v["PLATFORMS"][0] == ["linux/amd64", "linux/arm64"]
    v = parse("--tls-verify=false", "--evict=FALSE", "--skip-push", "true", "linux/s390x")
    assert (v["TLSVERIFY"][0], v["EVICT"][0], v["SKIP_PUSH"][0], v["PLATFORMS"][0]) == (
        False,
        False,
        True,
        ["linux/s390x"],
    )
    v = parse("linux/amd64", "--evict")
    assert v["EVICT"][0] is True and v["PLATFORMS"][0] == ["linux/amd64"]
