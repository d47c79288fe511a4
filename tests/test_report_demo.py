import json
import re
import subprocess
import sys


def test_quick_demo_writes_every_promised_file(tmp_path):
    from critwin.report.demo import run_demo

    out = tmp_path / "demo"
    summary = run_demo(out, quick=True, seed=0, progress=False)
    html = (out / "index.html").read_text()
    figures = re.findall(r'<img src="([^"]+)"', html)
    assert len(figures) == 6
    for name in figures:
        assert (out / name).stat().st_size > 1000 and name.endswith(".png")
    on_disk = json.loads((out / "summary.json").read_text())
    assert on_disk["critwin_demo"] and on_disk["theory"]["bound_violations_beyond_3se"] == 0
    # theory section: the exact fine window of the two-level mixture is non-empty and ordered
    w = summary["theory"]["window_0_in_01"]
    assert not w["empty"] and 0 < w["t_after"] < w["t_before"]
    # real model: the class is kept at the smallest noise level and mostly lost at the largest
    c = summary["digits"]["forward_reverse"]["c"]
    assert c[0] >= 0.8 and c[-1] <= 0.6
    assert not list(tmp_path.glob(".demo.*")), "no temporary directory may be left behind"
    # rerunning into the same report directory replaces it
    run_demo(out, quick=True, seed=0, progress=False)


def test_demo_refuses_a_foreign_directory(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    proc = subprocess.run(
        [sys.executable, "-m", "critwin.cli", "demo", "--out", str(tmp_path), "--quick", "--no-progress"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert "not an earlier critwin demo report" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert (tmp_path / "notes.txt").read_text() == "mine"
