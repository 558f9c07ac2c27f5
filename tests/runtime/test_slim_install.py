"""The slim runtime (numpy, Pillow, onnxruntime) without the [plots] extra: heatmaps are drawn with Pillow, bench
says in one line that its plot needs matplotlib, and scoring works even where tqdm is missing. Run with the two
libraries made unimportable."""
import subprocess
import sys
import textwrap

from tests.runtime.fixtures import ROOT

BLOCK = textwrap.dedent("""
    import sys, importlib.abc
    class _Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("matplotlib", "tqdm"):
                raise ImportError(name + " is blocked in this test")
    sys.meta_path.insert(0, _Block())
    from icrt.runtime.cli import main
    sys.exit(main(sys.argv[1:]))
""")


def icrt(*argv, env=None):
    return subprocess.run([sys.executable, "-c", BLOCK, *argv], capture_output=True, text=True, timeout=300,
                          cwd=ROOT, env=env)


def test_heatmaps_need_no_matplotlib(tmp_path, square_bundle):
    from PIL import Image

    Image.new("RGB", (80, 60), (200, 10, 10)).save(tmp_path / "a.png")
    r = icrt("score", str(tmp_path / "a.png"), "-m", square_bundle, "--heatmap", str(tmp_path / "maps"))
    assert r.returncode == 0, r.stderr
    with Image.open(tmp_path / "maps" / "a.heatmap.png") as im:
        assert im.format == "PNG" and im.width > 80


def test_scoring_without_tqdm_and_bench_without_matplotlib(tmp_path, square_bundle):
    import os

    from PIL import Image

    for i in range(12):  # more than PROGRESS_MIN_FILES: a bar would be drawn if tqdm were there
        Image.new("RGB", (70 + i, 50), (10 * i, 40, 90)).save(tmp_path / f"{i}.png")
    r = icrt("score", str(tmp_path), "-m", square_bundle, "--format", "csv",
             env={**os.environ, "ICRT_PROGRESS": "1"})
    assert r.returncode == 0, r.stderr
    assert len(r.stdout.strip().splitlines()) == 13
    r = icrt("bench", "-m", square_bundle, "--backend", "onnxruntime", "--precision", "fp32", "--batch-sizes", "1",
             "--iters", "2", "--warmup", "0", "--report", str(tmp_path / "rep"))
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "rep" / "report.md").is_file() and not (tmp_path / "rep" / "latency.png").exists()
    assert "latency.png not drawn: it needs matplotlib" in r.stderr
