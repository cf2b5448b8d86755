"""``tvmconv bench --model M --peers`` (tools/peers.py): every path timed in one process, each
checked against eager, a missing peer skipped with one line."""

import json

import pytest

from tvmconv.tools import peers


def test_paths_are_timed_and_checked_and_a_missing_peer_is_one_line(monkeypatch, tmp_path):
    real = peers._build

    def build(path, *args):
        if path == "openvino":
            raise ImportError("No module named 'openvino'", name="openvino")
        return real(path, *args)

    monkeypatch.setattr(peers, "_build", build)
    said = []
    rows = peers.compare("mobilenet_v2", 1, 32, paths=("eager", "openvino", "tvmconv.compile"), rounds=3,
                         say=said.append)
    assert [r["path"] for r in rows] == ["eager", "tvmconv.compile"]
    assert len(said) == 1 and "openvino: skipped, not installed" in said[0]
    by = {r["path"]: r for r in rows}
    assert by["eager"]["speedup_vs_eager"] == 1.0 and by["tvmconv.compile"]["max_rel_diff"] < 1e-4
    assert all(r["seconds"] > 0 and r["input"] == [1, 3, 32, 32] for r in rows)
    json.dumps(rows)
    peers.plot(rows, tmp_path / "peers.png")
    assert (tmp_path / "peers.png").stat().st_size > 1000


def test_an_unknown_path_is_named():
    with pytest.raises(ValueError, match="unknown path 'tensorrt'"):
        peers._build("tensorrt", None, None, 1, None)
