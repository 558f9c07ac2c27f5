"""`icrt score` / `icrt info`: formats, exit codes, inputs, atomic output."""
import csv
import io
import json
import os
import subprocess
import sys

import pytest
from PIL import Image

from icrt.runtime.cli import main
from tests.images import textured
from tests.runtime.fixtures import broken_inputs
from tests.runtime.fixtures import run_cli as run


@pytest.fixture
def folder(tmp_path):
    d = tmp_path / "imgs"
    (d / "sub").mkdir(parents=True)
    for i in range(3):
        textured(60 + 10 * i, 50, seed=i, level=i / 3).save(d / f"a{i}.png")
    textured(70, 70, seed=7).save(d / "sub" / "deep.jpg")
    (d / "notes.txt").write_text("not an image, and not named like one")
    return d


def test_json_format_lists_objects_with_image_and_score(capsys, square_bundle, folder):
    code, out, err = run(capsys, "score", folder, "-m", square_bundle, "--format", "json")
    recs = json.loads(out)
    assert code == 0 and err == ""
    assert [os.path.basename(r["image"]) for r in recs] == ["a0.png", "a1.png", "a2.png"]  # not recursive, no .txt
    assert all(isinstance(r["score"], float) and 0 <= r["score"] <= 1 and r["patches"] == 1 for r in recs)


def test_recursive_and_globs(capsys, square_bundle, folder):
    code, out, _ = run(capsys, "score", folder, "-m", square_bundle, "--format", "jsonl", "--recursive")
    assert code == 0 and [os.path.basename(json.loads(line)["image"]) for line in out.splitlines()] == \
        ["a0.png", "a1.png", "a2.png", "deep.jpg"]
    code, out, _ = run(capsys, "score", f"{folder}/a[12].png", f"{folder}/**/*.jpg", "-m", square_bundle,
                       "--format", "jsonl", "--recursive")
    assert code == 0 and [os.path.basename(json.loads(line)["image"]) for line in out.splitlines()] == \
        ["a1.png", "a2.png", "deep.jpg"]


def test_formats_agree(capsys, square_bundle, folder):
    outs = {f: run(capsys, "score", folder, "-m", square_bundle, "--format", f)[1]
            for f in ("table", "json", "jsonl", "csv")}
    scores = [r["score"] for r in json.loads(outs["json"])]
    assert [json.loads(line)["score"] for line in outs["jsonl"].splitlines()] == scores
    rows = list(csv.DictReader(io.StringIO(outs["csv"])))
    assert list(rows[0]) == ["image", "score", "patches", "width", "height", "error"]
    assert [float(r["score"]) for r in rows] == pytest.approx(scores, abs=1e-6)
    lines = outs["table"].splitlines()
    assert lines[0].split() == ["image", "score", "patches", "size"] and len(lines) == 4
    assert [float(line.split()[1]) for line in lines[1:]] == pytest.approx(scores, abs=1e-4)
    assert lines[1].split()[-1] == "60x50"


def test_partial_failure_exit_1_one_line_per_bad_file_rest_written(capsys, square_bundle, folder, tmp_path):
    broken = broken_inputs(str(tmp_path / "broken"))
    out_file = tmp_path / "out" / "scores.json"
    code, out, err = run(capsys, "score", folder / "a0.png", *[p for p, _ in broken.values()], folder / "a1.png",
                         "-m", square_bundle, "--format", "json", "-o", out_file)
    assert code == 1 and out == ""
    recs = json.loads(out_file.read_text())
    assert len(recs) == len(broken) + 2 and "score" in recs[0] and "score" in recs[-1]
    err_lines = err.strip().splitlines()
    assert len(err_lines) == len(broken) + 1  # one per bad file, then the summary
    for (path, words), line, rec in zip(broken.values(), err_lines, recs[1:-1]):
        assert line == f"icrt: {path}: {rec['error']}" and words in line
    assert err_lines[-1] == f"icrt: {len(broken)} of {len(broken) + 2} file(s) could not be scored"


def test_csv_and_table_carry_errors(capsys, square_bundle, tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"")
    code, out, _ = run(capsys, "score", bad, "-m", square_bundle, "--format", "csv")
    row = next(csv.DictReader(io.StringIO(out)))
    assert code == 1 and row["score"] == "" and row["error"] == "empty file (0 bytes)"
    code, out, _ = run(capsys, "score", bad, "-m", square_bundle)
    assert code == 1 and "error" in out.splitlines()[1] and "empty file" in out


def test_usage_and_model_errors_exit_2(capsys, square_bundle, folder, tmp_path, monkeypatch):
    import icrt.runtime.bundle.defaults as defaults

    with pytest.raises(SystemExit) as e:
        main(["score", "x.png", "--format", "xml"])
    assert e.value.code == 2
    with pytest.raises(SystemExit) as e:
        main(["score", "x.png", "--batch-size", "0"])
    assert e.value.code == 2 and "expected a positive integer" in capsys.readouterr().err
    code, _, err = run(capsys, "score", folder, "-m", tmp_path / "nowhere")
    assert code == 2 and err.startswith("icrt: error:") and "not a model bundle" in err
    code, _, err = run(capsys, "score", folder, "-m", square_bundle, "--precision", "fp16")
    assert code == 2 and "no fp16 model in this bundle" in err
    code, _, err = run(capsys, "score", tmp_path / "empty-dir-that-is-missing", "-m", square_bundle)
    assert code == 1  # a missing file is a per-file error, not a usage error
    (tmp_path / "void").mkdir()
    code, _, err = run(capsys, "score", tmp_path / "void", "-m", square_bundle)
    assert code == 2 and "no images found" in err
    monkeypatch.delenv(defaults.ENV_VAR, raising=False)
    monkeypatch.setattr(defaults, "PACKAGE_BUNDLE", str(tmp_path / "none"))
    code, _, err = run(capsys, "score", folder)
    assert code == 2 and "no default model is installed" in err and "-m BUNDLE" in err


def test_output_file_is_atomic_and_old_file_survives_a_failed_write(capsys, square_bundle, folder, tmp_path,
                                                                   monkeypatch):
    out_file = tmp_path / "scores.csv"
    out_file.write_text("old contents\n")
    import icrt.runtime.base.files as files

    real_replace = os.replace
    monkeypatch.setattr(files.os, "replace", lambda *a: (_ for _ in ()).throw(OSError("disk full")))
    monkeypatch.chdir(tmp_path)  # the scores' fallback file lands here
    code, _, err = run(capsys, "score", folder, "-m", square_bundle, "--format", "csv", "-o", out_file)
    assert code == 2 and "the scores were saved in" in err
    assert out_file.read_text() == "old contents\n"
    assert (tmp_path / f"icrt-scores-{os.getpid()}.csv").read_text().startswith("image,score,")
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".tmp")] == []  # no half-written leftovers
    monkeypatch.setattr(files.os, "replace", real_replace)
    capsys.readouterr()
    assert run(capsys, "score", folder, "-m", square_bundle, "--format", "csv", "-o", out_file)[0] == 0
    assert out_file.read_text().startswith("image,score,")


def test_heatmap_option(capsys, patches_bundle, folder, tmp_path):
    patches = patches_bundle
    code, out, _ = run(capsys, "score", folder, "-m", patches, "--heatmap", tmp_path / "hm", "--format", "json")
    recs = json.loads(out)
    assert code == 0 and sorted(os.listdir(tmp_path / "hm")) == ["a0.heatmap.png", "a1.heatmap.png", "a2.heatmap.png"]
    assert all(r["heatmap"].endswith(".heatmap.png") and r["patches"] > 1 for r in recs)


def test_progress_bar_on_stderr_for_many_files(capsys, square_bundle, tmp_path, monkeypatch):
    for i in range(12):
        textured(40, 40, seed=i).save(tmp_path / f"p{i:02d}.png")
    monkeypatch.setenv("ICRT_PROGRESS", "1")
    code, out, err = run(capsys, "score", tmp_path, "-m", square_bundle, "--format", "jsonl")
    assert code == 0 and len(out.splitlines()) == 12
    assert "scoring" in err and "12/12" in err


def test_info_shows_model_card(capsys, square_bundle, patches_bundle):
    code, out, _ = run(capsys, "info", patches_bundle, "--verbose")
    assert code == 0
    for words in ("tiny-d2s-patches  (d2s)", "64x64 patches, stride 32, pooled by mean, long side capped at 256",
                  "fp32  onnxruntime: model.onnx", "TensorRT 10.3.0, sm 8.7", "training data: none"):
        assert words in out
    code, out, _ = run(capsys, "info", square_bundle, "--json")
    assert code == 0 and json.loads(out)["files"]["int8"]["onnxruntime"] == "model.int8.onnx"


def test_entry_point_subprocess_exit_codes(square_bundle, folder, tmp_path):
    """The real process: stdout has the records, stderr the error line, exit code 1."""
    bad = tmp_path / "x.jpg"
    bad.write_bytes(b"GIF89a-truncated")
    r = subprocess.run([sys.executable, "-m", "icrt.runtime.cli", "score", str(folder / "a0.png"), str(bad),
                        "-m", square_bundle, "--format", "jsonl"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 1, r.stderr
    assert len(r.stdout.splitlines()) == 2 and str(bad) in r.stderr.splitlines()[0]
    r = subprocess.run([sys.executable, "-m", "icrt.runtime.cli"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "score" in r.stdout


@pytest.mark.parametrize("flag,value,words", [("--batch-size", "100000", "at most 1024"),
                                              ("--threads", "5000", "at most"), ("--batch-size", "0", "positive")])
def test_absurd_batch_size_and_threads_are_refused(capsys, square_bundle, folder, flag, value, words):
    with pytest.raises(SystemExit) as e:
        main(["score", str(folder), "-m", square_bundle, flag, value])
    assert e.value.code == 2 and words in capsys.readouterr().err


def test_patch_scoring_keeps_one_batch_of_inputs_in_memory(patches_bundle, tmp_path, monkeypatch):
    """A big photo's patches are made batch by batch: the batches the model sees never exceed --batch-size,
    and the scores equal scoring all patches at once."""
    import numpy as np

    from icrt.runtime import Scorer
    from icrt.runtime.scoring.preprocess import to_model_input

    p = tmp_path / "big.png"
    textured(900, 700, seed=3).save(p)
    scorer = Scorer.load(patches_bundle, batch_size=8)
    seen = []
    real_run = scorer.backend.run
    monkeypatch.setattr(scorer.backend, "run", lambda x: (seen.append(len(x)), real_run(x))[1])
    rec = scorer.score(str(p))
    assert rec["patches"] > 40 and max(seen) <= 8
    from icrt.runtime.scoring.preprocess import load_rgb

    x, _ = to_model_input(load_rgb(str(p)), scorer.prep)
    full = np.concatenate([real_run(x[i:i + 64]) for i in range(0, len(x), 64)])
    assert abs(rec["score"] - float(full.mean())) < 1e-5


def test_a_bug_keeps_its_traceback_and_is_not_a_usage_error(capsys, square_bundle, monkeypatch):
    """Only icrt's own errors (runtime.base.errors.IcrtError) become `icrt: error:` lines; a plain ValueError is a bug."""
    import icrt.runtime.tools.info

    def bug(manifest, verbose=False):
        raise ValueError("a bug, not a bad input")

    monkeypatch.setattr(icrt.runtime.tools.info, "model_card", bug)
    with pytest.raises(ValueError, match="a bug"):
        main(["info", square_bundle])
    assert "icrt: error" not in capsys.readouterr().err


def test_interrupt_is_exit_130(capsys, square_bundle, monkeypatch):
    import icrt.runtime.tools.info

    def interrupted(manifest, verbose=False):
        raise KeyboardInterrupt

    monkeypatch.setattr(icrt.runtime.tools.info, "model_card", interrupted)
    assert main(["info", square_bundle]) == 130 and capsys.readouterr().err == "icrt: interrupted\n"


# --- N11: icrt info on a malformed model card, and terminal escapes from a bundle ------------------------------


@pytest.mark.parametrize("card", [
    {"heldout": {"fp32": {"per_category": {"x": 5}}}},
    {"heldout": {"fp32": {"per_category": [1, 2]}}},
    {"heldout": {"fp32": {"per_category": {"x": {"n": {"a": 1}, "srcc": "high"}}}}},
    {"heldout": {"fp32": 7, "images": [1]}},
    {"heldout": [1, 2]},
    {"summary": {"nested": [1, {"x": None}]}, "limits": 5},
])
def test_info_shows_a_malformed_model_card_without_a_traceback(capsys, tmp_path, card):
    from tests.runtime.fixtures import edit_manifest, make_bundle

    bundle = edit_manifest(make_bundle(tmp_path / "b"), lambda d: d.update(model_card=card))
    for flags in ([], ["--verbose"]):
        code, out, err = run(capsys, "info", bundle, *flags)
        assert code == 0 and err == "" and "score range" in out


def test_info_escapes_terminal_control_sequences(capsys, tmp_path):
    from tests.runtime.fixtures import edit_manifest, make_bundle

    def evil(d):
        d["name"] = "tiny\x1b[2J\x9b31m"
        d["model_card"] = {"summary": "\x1b]0;title\x07 hi", "heldout": {"fp32": {"per_category": {"\x1b[1m": {"n": 3}}}}}
        d["versions"] = {"torch": "\x1b[31mred"}
    bundle = edit_manifest(make_bundle(tmp_path / "b"), evil)
    code, out, err = run(capsys, "info", bundle, "--verbose")
    assert code == 0 and err == ""
    assert not any(c in out for c in "\x1b\x07\x9b")
    assert "tiny\\x1b[2J\\x9b31m" in out and "\\x1b]0;title\\x07 hi" in out and "torch \\x1b[31mred" in out
    code, out, _ = run(capsys, "info", bundle, "--json")  # JSON escapes them itself
    assert code == 0 and "\x1b" not in out and "\\u001b" in out


def test_every_scorer_option_reaches_every_command_that_opens_a_scorer(monkeypatch, square_bundle, tmp_path):
    """ScorerOptions is declared once: each field with a flag is an option of every command that builds a Scorer,
    and arrives at the backend's open() as given (a new option is a field there plus the code that reads it)."""
    import dataclasses

    import icrt.runtime.backends as backends
    import icrt.runtime.cli.commands as commands
    from icrt.runtime.cli.app import build_parser
    from icrt.runtime.scoring.options import ScorerOptions

    flags = {f.name: f.metadata["flags"] for f in dataclasses.fields(ScorerOptions) if f.metadata["flags"]}
    assert set(flags) >= {"model", "backend", "precision", "batch_size", "threads", "device_id"}
    parser, known = build_parser()
    subs = next(a for a in parser._actions if a.dest == "command").choices
    for name in ("score", "eval", "batch", "serve", "bench"):
        have = {s for a in subs[name]._actions for s in a.option_strings}
        expected = {f for field, fl in flags.items() if not (name == "bench" and field == "batch_size") for f in fl}
        assert expected <= have, (name, expected - have)
    assert set(known) == set(commands.COMMANDS)

    seen = []
    real = backends.open_backend

    def spy(manifest, options):
        seen.append(options)
        return real(manifest, options.replace(device_id=0))

    monkeypatch.setattr(backends, "open_backend", spy)
    import icrt.runtime.scoring.scorer as scorer_module
    monkeypatch.setattr(scorer_module, "open_backend", spy)
    image = tmp_path / "a.png"
    Image.new("RGB", (40, 30), (10, 200, 30)).save(image)
    assert main(["score", str(image), "-m", square_bundle, "--backend", "onnxruntime", "--threads", "1",
                 "--device-id", "3", "--batch-size", "2", "--format", "json"]) == 0
    (o,) = seen
    assert (o.model, o.backend, o.threads, o.device_id, o.batch_size) == (square_bundle, "onnxruntime", 1, 3, 2)


def test_score_ends_with_one_line_saying_what_ran_and_quiet_drops_it(capsys, square_bundle, tmp_path):
    """Issue 27: backend (never auto) and its version, precision, device, images scored and failed, images/s, wall."""
    import re

    import onnxruntime

    good, bad = tmp_path / "a.png", tmp_path / "b.png"
    textured(40, 30, seed=1).save(good)
    bad.write_bytes(b"no image")
    code = main(["score", str(good), str(bad), "-m", square_bundle, "--backend", "auto", "--precision", "fp32"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1
    m = re.fullmatch(r"icrt: 1 scored, 1 failed in ([\d.]+) s \(([\d.]+) images/s\) by (\w+) (\S+), fp32, cpu", err[-1])
    assert m, err[-1]
    assert m.group(3) in ("onnxruntime", "openvino") and m.group(3) != "auto"
    if m.group(3) == "onnxruntime":
        assert m.group(4) == onnxruntime.__version__
    assert main(["score", str(good), "-m", square_bundle, "--backend", "onnxruntime", "-q"]) == 0
    assert capsys.readouterr().err == ""


def test_ran_line_rate_counts_scored_images_only():
    from icrt.runtime.cli.command import ran_line

    assert ran_line("onnxruntime 1.0, fp32, cpu", 0, 3, 0.5) == (
        "icrt: 0 scored, 3 failed in 0.5 s (0.0 images/s) by onnxruntime 1.0, fp32, cpu")
    assert "(8.0 images/s)" in ran_line("x", 4, 1, 0.5)
