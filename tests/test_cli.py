import sys

from taskimage import cli


def test_missing_optional_dependency_names_the_extra(monkeypatch, capsys):
    for name in [m for m in sys.modules if m == "kubernetes" or m.startswith("kubernetes.") or m.startswith("taskimage.kube")]:
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
    assert set(cli._subparsers(cli.build_parser()).choices) >= {"build", "index", "binfmt", "bundle", "lint", "run", "cluster", "pipeline", "logs", "dev"}
