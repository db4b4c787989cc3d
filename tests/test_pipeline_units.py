"""Pure parts of the Pipeline engine against Tekton's documented behaviour (no containers)."""

from __future__ import annotations

import pytest

from taskimage.errors import UsageError
from taskimage.tekton.localrun import dag, matrix


def test_matrix_include_as_in_tektons_docs():
    """docs/matrix.md, "include": the example with GOARCH x version and four include entries."""
    params = [("GOARCH", ["linux/amd64", "linux/ppc64le", "linux/s390x"]), ("version", ["go1.17", "go1.18.1"])]
    include = [
        {"package": "path/to/common/package/"},
        {"GOARCH": "linux/s390x", "flags": "-cover -v"},
        {"version": "go1.17", "context": "path/to/go117/context"},
        {"GOARCH": "I-do-not-exist"},
    ]
    combos = matrix.fan_out(params, include, "t")
    common, flags, ctx = "path/to/common/package/", "-cover -v", "path/to/go117/context"
    assert combos == [  # the first param varies fastest, as Tekton's distribute() makes them
        {"GOARCH": "linux/amd64", "version": "go1.17", "package": common, "context": ctx},
        {"GOARCH": "linux/ppc64le", "version": "go1.17", "package": common, "context": ctx},
        {"GOARCH": "linux/s390x", "version": "go1.17", "package": common, "flags": flags, "context": ctx},
        {"GOARCH": "linux/amd64", "version": "go1.18.1", "package": common},
        {"GOARCH": "linux/ppc64le", "version": "go1.18.1", "package": common},
        {"GOARCH": "linux/s390x", "version": "go1.18.1", "package": common, "flags": flags},
        {"GOARCH": "I-do-not-exist"},
    ]
    # an entry that agrees with no combination but shares a value with one is dropped, as in Tekton
    assert matrix.fan_out([("A", ["1", "2"]), ("B", ["x"])], [{"A": "1", "B": "y"}], "t") == [
        {"A": "1", "B": "x"},
        {"A": "2", "B": "x"},
    ]


def test_matrix_only_include_and_limit():
    assert matrix.fan_out([], [{"a": "1"}, {"a": "2", "b": "x"}], "t") == [{"a": "1"}, {"a": "2", "b": "x"}]
    with pytest.raises(UsageError, match="257 combinations"):
        matrix.fan_out([("x", [str(i) for i in range(257)])], [], "task t")


def test_dag_errors():
    with pytest.raises(UsageError, match="a -> b -> a|b -> a -> b"):
        dag.build({"a": ["b"], "b": ["a"]}, "p")
    with pytest.raises(UsageError, match="runs after nope"):
        dag.build({"a": ["nope"]}, "p")
    graph = dag.build({"a": [], "b": ["a"], "c": ["a", "a"]}, "p")
    assert graph["c"] == ("a",)
    assert dag.ready(graph, set(), set()) == ["a"]
    assert dag.ready(graph, {"a"}, {"a"}) == ["b", "c"]
