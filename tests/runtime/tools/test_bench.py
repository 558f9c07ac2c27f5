"""`icrt bench`: report files and fields on a tiny model with few iterations."""
import json
import os
import re

import pytest
from PIL import Image

from icrt.runtime.cli import main
from icrt.runtime.scoring.options import ScorerOptions
from tests.images import textured
from tests.runtime.fixtures import needs_matplotlib

pytestmark = needs_matplotlib  # every bench writes its plot

FIELDS = {"backend", "precision", "batch_size", "mean_ms", "p50_ms", "p90_ms", "p99_ms", "images_per_s",
          "patches_per_s", "per_image_ms", "e2e_ms_per_image", "e2e_images_per_s", "device"}


def test_bench_writes_report_md_json_and_plot(square_bundle, tmp_path, capsys):
    bundle = square_bundle
    out = tmp_path / "report"
    code = main(["bench", "-m", bundle, "--backend", "onnxruntime", "--precision", "fp32,int8", "--batch-sizes", "1,4",
                 "--warmup", "1", "--iters", "3", "--report", str(out)])
    assert code == 0, capsys.readouterr().err
    assert sorted(os.listdir(out)) == ["latency.png", "report.json", "report.md"]
    r = json.loads((out / "report.json").read_text())
    assert [(x["precision"], x["batch_size"]) for x in r["results"]] == [("fp32", 1), ("fp32", 4), ("int8", 1), ("int8", 4)]
    for x in r["results"]:
        assert FIELDS <= set(x) and x["backend"] == "onnxruntime"
        assert 0 < x["p50_ms"] <= x["p99_ms"] and x["images_per_s"] == pytest.approx(1000 * x["batch_size"] / x["mean_ms"])
    assert r["machine"]["cpu"] and "onnxruntime" in r["machine"]["versions"]
    assert {(ref["model"], ref["ms"], ref["hardware"]) for ref in r["reported"]} >= {
        ("CM-SSA", 35.43, "NVIDIA V100"), ("D2S-R18", 4.573, "NVIDIA RTX 3090"), ("D2S-R50", 10.738, "NVIDIA RTX 3090"),
        ("ICNet", 9.369, "NVIDIA RTX 3090")}
    assert {ref["model"] for ref in r["reported"]} >= {"TOPIQ"} and 4.56 in [ref["ms"] for ref in r["reported"]]
    md = (out / "report.md").read_text()
    import onnxruntime

    assert f"| onnxruntime {onnxruntime.__version__} | int8 | cpu | 4 |" in md  # the engine's version beside it
    assert "NVIDIA RTX 3090" in md and "this run" in md
    png = Image.open(out / "latency.png")
    assert png.format == "PNG" and png.width >= 800


def test_bench_patch_model_counts_patches_per_image(patches_bundle, tmp_path, capsys):
    from icrt.runtime.tools.bench import run_bench

    bundle = patches_bundle
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    textured(160, 96, seed=1).save(imgs / "a.png")  # 160x96 at 64 px patches, stride 32: 4 x 2 = 8 patches
    r = run_bench(ScorerOptions(model=bundle), backends=["onnxruntime"], precisions=["fp32"], batch_sizes=[8], warmup=0,
                  iters=2,
                  images=str(imgs), report_dir=str(tmp_path / "rep"))
    x = r["results"][0]
    assert x["inputs_per_image"] == 8 and x["images_per_s"] == pytest.approx(x["patches_per_s"] / 8)
    assert x["e2e_images"] == 16  # a stream of at least 16 images (4 batches), so decoding overlaps inference


def test_bench_reports_skipped_settings_and_fails_when_nothing_ran(patches_bundle, tmp_path, capsys):
    bundle = patches_bundle  # fp32 only
    code = main(["bench", "-m", bundle, "--backend", "onnxruntime", "--precision", "int8", "--iters", "1",
                 "--report", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == 2 and "skipped onnxruntime/int8" in err and "nothing could be timed" in err
    assert json.loads((tmp_path / "r" / "report.json").read_text())["skipped"][0]["precision"] == "int8"
    assert main(["bench", "-m", bundle, "--precision", "fp64"]) == 2


def test_agreement_ranks_ties_and_leaves_out_failed_images():
    from icrt.runtime.tools.bench import agreement

    a = agreement([0.1, 0.2, None, 0.4, 0.3], [0.1, 0.25, 0.5, 0.3, 0.35])
    assert a["n"] == 4 and a["srcc"] == pytest.approx(0.8) and a["max_abs_diff"] == pytest.approx(0.1)
    assert agreement([0.1, 0.2], [0.1, 0.2])["srcc"] is None  # too few images for a rank correlation
    assert agreement([None], [0.3]) == {"n": 0, "srcc": None, "max_abs_diff": None, "mean_abs_diff": None}


def _bundle_named(square_bundle, folder, name):
    import shutil

    from tests.runtime.fixtures import edit_manifest

    shutil.copytree(square_bundle, folder)
    return edit_manifest(str(folder), lambda d: d.update(name=name))


def test_bundle_text_in_the_plot_and_report_md_stays_text(square_bundle, tmp_path, capsys):
    """R15: a `$` in the bundle's name is no mathtext (it was a traceback and no latency.png); R9: its ESC, newline and
    Markdown (a tracking image) reach report.md escaped, on one line."""
    name = "net $\\foo{x}$ v2 \x1b]0;TITLE\x07\n![](http://tracker.example/x.png) <img src=x> a|b"
    bundle = _bundle_named(square_bundle, tmp_path / "b", name)
    out = tmp_path / "report"
    code = main(["bench", "-m", bundle, "--backend", "onnxruntime", "--precision", "fp32", "--batch-sizes", "1",
                 "--warmup", "0", "--iters", "1", "--report", str(out)])
    assert code == 0, capsys.readouterr().err
    assert Image.open(out / "latency.png").format == "PNG"
    md = (out / "report.md").read_text()
    assert "\x1b" not in md and "\x07" not in md and "![" not in md and not re.search(r"(?<!\\)<img", md)
    title = md.splitlines()[0]
    assert title.startswith("# icrt bench: net $\\\\foo{x}$ v2 \\\\x1b\\]0;TITLE\\\\x07\\\\n\\!\\[\\](http") and "\\<img" in title
    assert json.loads((out / "report.json").read_text())["model"] == name  # the data itself is kept as it is


def test_a_link_or_fifo_planted_in_the_report_folder_is_refused_before_timing(square_bundle, tmp_path, capsys,
                                                                            monkeypatch):
    """R1: `--report shared/` where shared/report.md is a link (or latency.png a FIFO): icrt's own files are never
    written through a link or into a FIFO; one line, exit 2, nothing timed, the victim unchanged, no hang."""
    import icrt.runtime.tools.bench as bench

    monkeypatch.setattr(bench, "bench_batch", lambda *a, **k: pytest.fail("timed before the report folder was checked"))
    victim = tmp_path / "victim.txt"
    victim.write_text("VICTIM\n")
    shared = tmp_path / "shared"
    shared.mkdir()
    os.symlink(victim, shared / "report.md")
    code = main(["bench", "-m", square_bundle, "--backend", "onnxruntime", "--report", str(shared)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and f"{shared}/report.md is a symbolic link" in err[0], err
    os.remove(shared / "report.md")
    os.mkfifo(shared / "latency.png")
    code = main(["bench", "-m", square_bundle, "--backend", "onnxruntime", "--report", str(shared)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "latency.png is a FIFO, not a regular file" in err[0], err
    assert victim.read_text() == "VICTIM\n" and sorted(os.listdir(shared)) == ["latency.png"]


def test_the_report_writer_itself_never_writes_through_a_link(tmp_path):
    """A link that appears after the check: write_report refuses it with one line naming the file."""
    from icrt.runtime.base.errors import UserInputError
    from icrt.runtime.tools.bench import write_report

    victim = tmp_path / "victim.txt"
    victim.write_text("VICTIM\n")
    (tmp_path / "r").mkdir()
    os.symlink(victim, tmp_path / "r" / "report.json")
    with pytest.raises(UserInputError, match="report.json: is a symbolic link"):
        write_report({"model": "m"}, str(tmp_path / "r"))
    assert victim.read_text() == "VICTIM\n"
