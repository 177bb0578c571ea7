"""`ofa profile`: anchors printed, a refused profile kept aside (the CLI side of tests/search/test_timing.py)."""

from __future__ import annotations


def test_profile_cli_prints_anchors_and_keeps_a_refused_profile_aside(tmp_path, capsys):
    from ofa_app.cli import main
    from tests.search._tiny import tiny_supernet

    tiny_supernet().save(tmp_path / "supernet")
    base = ["profile", "--supernet", str(tmp_path / "supernet"), "--seq-len", "16", "--subnets",
            "5", "--held-out", "2", "--threads", "1"]  # fmt: skip
    assert main([*base, "--out", str(tmp_path / "lat.json")]) == 0
    out = capsys.readouterr().out
    assert "max subnet (the teacher's shape)" in out and "min subnet" in out
    assert "--budget-fraction" in out
    code = main([*base, "--out", str(tmp_path / "bad.json"), "--max-error", "1e-9"])
    err = capsys.readouterr().err
    ours = [line for line in err.splitlines() if line.startswith("ofa ")]  # beside progress bars
    assert code == 2 and len(ours) == 1 and "not usable" in ours[0]
    assert not (tmp_path / "bad.json").exists()
    assert (tmp_path / "bad.json.rejected.json").is_file()
