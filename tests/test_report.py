"""report: figures, Markdown and JSON for several runs, built without torch."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from ofa_deploy.errors import OfaError

SYNTHETIC = textwrap.dedent('''
    import json, random
    from pathlib import Path
    from ofa_deploy import run
    from ofa_deploy.cost import macs, cost
    from ofa_deploy.space import SearchSpace
    from ofa_deploy.buckets import sample_in_bucket
    from ofa_deploy.evals import write_eval
    from ofa_deploy.evaluate.population import bucket_statistics  # noqa - replaced below when torch is blocked

    def make(path, method, epochs, wall, base, seed):
        space = SearchSpace(in_channels=1)
        path = Path(path); path.mkdir(parents=True)
        run.write_config(path, {"run": {"name": path.name, "method": method, "seed": 0, "completed": True},
                                "data": {"dataset": "fmnist"}, "space": space.to_dict(),
                                "train": {"method": method, "epochs": epochs}})
        (path / "summary.json").write_text(json.dumps({"train_wall_time_s": wall, "completed": True}))
        rng = random.Random(seed)
        ks = [[rng.randint(0, 50) for _ in range(3)] for _ in range(20)]
        ks[19] = [0, 0, 0]
        hist = {"unit": "subnet-steps", "choices": {"ks": [3, 5, 7], "e": [3, 4, 6], "d": [2, 3, 4]},
                "ks": ks, "e": [[rng.randint(0, 50) for _ in range(3)] for _ in range(20)],
                "d": [[rng.randint(1, 50) for _ in range(3)] for _ in range(5)],
                "mflops_edges": list(range(3, 17)), "mflops_counts": [rng.randint(0, 99) for _ in range(13)],
                "buckets": {"4": 3, "6": 20, "8": 40, "10": 25, "12": 5, "14": 0}, "total": 120}
        (path / "histogram.json").write_text(json.dumps(hist))
        subnets = []
        for b in (4.0, 6.0, 8.0, 10.0, 12.0, 14.0):
            for i in range(3):
                s = sample_in_bucket(space, b, 0.5, rng)
                m, p = cost(space, s)
                acc = base + 0.004 * b + rng.uniform(-0.02, 0.02)
                subnets.append({"bucket": b, "subnet": s.to_dict(), "text": str(s), "macs": m,
                                "mflops": m / 1e6, "params": p, "accuracy": acc, "loss": 1 - acc})
        result = {"name": "test-s0-n3", "split": "test", "test_images": 100, "params": {"subnet": None},
                  "subnets": subnets, "buckets": STATS(subnets)}
        write_eval(path, "test-s0-n3", result)
''')

STATS = textwrap.dedent('''
    def STATS(subnets):
        out = []
        for b in (4.0, 6.0, 8.0, 10.0, 12.0, 14.0):
            a = [s["accuracy"] for s in subnets if s["bucket"] == b]
            m = sum(a) / len(a)
            out.append({"mflops": b, "n": len(a), "mean": m, "std": 0.0, "min": min(a), "max": max(a)})
        return out
''')


def _script(body: str, block_torch: bool) -> str:
    head = "import sys\nsys.modules['torch'] = None\n" if block_torch else ""
    synthetic = SYNTHETIC.replace("from ofa_deploy.evaluate.population import bucket_statistics  "
                                  "# noqa - replaced below when torch is blocked\n", "")
    return head + STATS + synthetic + textwrap.dedent(body)


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)


def test_report_of_two_runs_without_torch(tmp_path):
    proc = _run(_script(f'''
        make("{tmp_path}/ps", "ps", 82, 3600.0, 0.80, 1)
        make("{tmp_path}/rss", "rss", 82, 1800.0, 0.84, 2)
        from ofa_deploy.report import build_report
        summary = build_report(["{tmp_path}/ps", "{tmp_path}/rss"], "{tmp_path}/out")
        print(json.dumps(summary))
        assert "torch" not in sys.modules or sys.modules["torch"] is None
    ''', block_torch=True))
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    out = tmp_path / "out"
    for stem in ("accuracy", "train_time", "histograms"):
        assert (out / f"{stem}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert "<svg" in (out / f"{stem}.svg").read_text()[:2000]
    md = (out / "report.md").read_text()
    assert "OFA-PS, 82 ep" in md and "RSS, 82 ep" in md and "2.00x" in md
    assert "![accuracy vs MFLOPs](accuracy.png)" in md
    ev = json.loads((tmp_path / "rss" / "eval" / "test-s0-n3.json").read_text())
    for b in ev["buckets"]:
        row = (f"| {b['mflops']:g} | RSS, 82 ep | 3 | {100 * b['mean']:.2f} | {100 * b['std']:.2f} | "
               f"{100 * b['min']:.2f} | {100 * b['max']:.2f} | {100 * (b['max'] - b['min']):.2f} |")
        assert row in md
    assert summary["reference_run"] == "ps" and [r["label"] for r in summary["runs"]] == ["OFA-PS, 82 ep",
                                                                                           "RSS, 82 ep"]
    assert json.loads((out / "report.json").read_text())["runs"][1]["buckets"] == ev["buckets"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.")]


def test_histograms_are_a_readable_grid_and_one_run_is_compared_with_nothing(tmp_path):
    """Issue 30: histograms.png was one 2588x506 strip with 6-8 pt labels; report.md gave a
    single run a "speed-up vs reference" column."""
    proc = _run(_script(f'''
        make("{tmp_path}/rss", "rss", 10, 60.0, 0.8, 1)
        from ofa_deploy.report import build_report, figures
        from ofa_deploy.report.results import load_run
        fig = figures.histogram_figure([load_run("{tmp_path}/rss", None)])
        fig.canvas.draw()
        sizes = [t.get_fontsize() for ax in fig.axes for t in
                 [ax.xaxis.label, ax.yaxis.label, *ax.get_xticklabels(), *ax.get_yticklabels()] if t.get_text()]
        print(json.dumps({{"size": list(fig.get_size_inches()), "panels": len(fig.axes), "smallest": min(sizes)}}))
        build_report(["{tmp_path}/rss"], "{tmp_path}/out")
    ''', block_torch=True))
    assert proc.returncode == 0, proc.stderr
    facts = json.loads(proc.stdout.splitlines()[-1])
    width, height = facts["size"]
    assert width / height < 2.5 and facts["panels"] == 5  # 2 x 2 panels and the colour bar
    assert facts["smallest"] >= 10
    from PIL import Image

    with Image.open(tmp_path / "out" / "histograms.png") as image:
        assert image.width / image.height < 2.5
    md = (tmp_path / "out" / "report.md").read_text()
    assert "speed-up" not in md.lower() and "| run | dataset | schedule | epochs | train wall time | evaluation |" in md


def test_report_cli_and_errors(tmp_path):
    proc = _run(_script(f'''
        make("{tmp_path}/a", "rss", 10, 60.0, 0.8, 1)
        make("{tmp_path}/b", "rss", 10, 50.0, 0.7, 2)
    ''', block_torch=True))
    assert proc.returncode == 0, proc.stderr
    cli = [sys.executable, "-m", "ofa_deploy", "report"]
    ok = subprocess.run(cli + [str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "r"), "--json"],
                        capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    labels = [r["label"] for r in json.loads(ok.stdout)["runs"]]
    assert labels == ["RSS, 10 ep [a]", "RSS, 10 ep [b]"]  # equal labels are told apart
    (tmp_path / "noeval").mkdir()
    (tmp_path / "noeval" / "config.toml").write_text((tmp_path / "a" / "config.toml").read_text())
    (tmp_path / "afile").write_text("x")
    for args, message in [
        ([str(tmp_path / "a"), str(tmp_path / "noeval")], "no population evaluation"),
        ([str(tmp_path / "a"), str(tmp_path / "a")], "given twice"),
        ([str(tmp_path / "a"), "--eval", "missing"], "no evaluation named"),
        ([str(tmp_path / "nothing")], "does not exist"),
    ]:
        bad = subprocess.run(cli + args + ["--out", str(tmp_path / "bad")], capture_output=True, text=True)
        assert bad.returncode == 2 and message in bad.stderr and len(bad.stderr.splitlines()) == 1, bad.stderr
        assert not (tmp_path / "bad").exists()
    bad = subprocess.run(cli + [str(tmp_path / "a"), "--out", str(tmp_path / "afile")], capture_output=True, text=True)
    assert bad.returncode == 2 and "is a file" in bad.stderr
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    partial = subprocess.run(cli + [str(tmp_path / "a"), str(tmp_path / "noeval"), "--allow-missing-eval",
                                    "--out", str(tmp_path / "partial")], capture_output=True, text=True)
    assert partial.returncode == 0, partial.stderr
    md = (tmp_path / "partial" / "report.md").read_text()
    assert md.count("| `a` |") == 2 and "unfinished" in md  # the copied config names it "a" as well


def test_corrupt_eval_file_is_a_clear_error(tmp_path):
    from ofa_deploy.report import read_eval

    (tmp_path / "eval").mkdir(parents=True)
    (tmp_path / "eval" / "x.json").write_text("{not json")
    with pytest.raises(OfaError, match="not valid JSON"):
        read_eval(tmp_path, "x")
    (tmp_path / "eval" / "y.json").write_text(json.dumps({"a": 1}))
    with pytest.raises(OfaError, match="not an evaluation"):
        read_eval(tmp_path, "y")
