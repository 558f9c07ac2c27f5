"""`icrt eval`: a bundle measured against a labels file, torch- and scipy-free: the scores icrt score gives, figures
over the images scored, bad rows and images told one line each and counted, exit codes 0 / 1 / 2."""
import json
import os
import subprocess
import sys
import textwrap

import pytest

import icrt.runtime.tools.metrics as metrics
from tests.images import textured
from tests.runtime.fixtures import ROOT, make_bundle
from tests.runtime.fixtures import run_cli as run


@pytest.fixture
def labelled(tmp_path):
    """Nine images in three categories under tmp/imgs, labelled by a CSV in tmp: (csv path, its rows)."""
    (tmp_path / "imgs").mkdir()
    rows = []
    for i in range(9):
        name = f"imgs/{i}.png"
        textured(40 + 7 * i, 36, seed=i, level=i / 8).save(tmp_path / name)
        rows.append((name, round(0.1 * i, 2), "abc"[i % 3]))
    csv = tmp_path / "labels.csv"
    csv.write_text("image,score,category\n" + "".join(f"{n},{s},{c}\n" for n, s, c in rows))
    return str(csv), rows


def test_figures_are_the_metrics_of_the_scores_icrt_score_gives(capsys, square_bundle, labelled):
    csv, rows = labelled
    code, out, err = run(capsys, "eval", "--data", csv, "-m", square_bundle, "--format", "json")
    assert code == 0 and err == ""
    got = json.loads(out)
    code, out, _ = run(capsys, "score", *[os.path.join(os.path.dirname(csv), n) for n, _, _ in rows], "-m",
                       square_bundle, "--format", "json")
    scores = [r["score"] for r in json.loads(out)]
    want = metrics.report(scores, [s for _, s, _ in rows], [c for _, _, c in rows], min_images=3)
    assert got["n"] == 9 and got["failed"] == 0 and got["unreadable_rows"] == 0
    for k in ("srcc", "plcc", "krcc", "rmse", "mae", "rmae"):
        assert got["pooled"][k] == pytest.approx(want[k], abs=1e-12), k
        assert got["per_category"]["b"][k] == pytest.approx(want["per_category"]["b"][k], abs=1e-12), k
    assert set(got["per_category"]) == {"a", "b", "c"} and got["pooled"]["computable"] is True
    assert got["category_means"]["srcc"] == pytest.approx(want["mean_category_srcc"], abs=1e-12)


def test_table_shows_pooled_categories_means_and_counts(capsys, square_bundle, labelled):
    csv, _ = labelled
    code, out, _ = run(capsys, "eval", "--data", csv, "-m", square_bundle)
    lines = out.splitlines()
    assert code == 0 and lines[0].split() == ["images", "SRCC", "PLCC", "KRCC", "RMSE"]
    assert lines[1].split()[:2] == ["pooled", "9"] and len(lines[1].split()) == 6
    assert [line.split()[0] for line in lines[2:5]] == ["a", "b", "c"]
    assert lines[5].startswith("  mean of categories") and lines[6] == f"9 scored, 0 failed (labels: {csv})"


def test_bad_rows_and_images_are_told_counted_and_left_out(capsys, square_bundle, labelled):
    csv, _ = labelled
    folder = os.path.dirname(csv)
    (open(os.path.join(folder, "imgs", "empty.png"), "wb")).close()
    with open(csv, "a") as f:
        f.write("imgs/0.png,high,a\nimgs/missing.png,0.5,a\nimgs/empty.png,0.5,d\nimgs/1.png,0.2,d\nimgs/2.png\n")
    code, out, err = run(capsys, "eval", "--data", csv, "-m", square_bundle, "--format", "json")
    got = json.loads(out)
    assert code == 1
    assert err.splitlines() == [
        f"icrt: {csv}:11: score 'high' is not a number", f"icrt: {csv}:15: expected 3 fields, got 1",
        f"icrt: {csv}:12: imgs/missing.png: no such file", f"icrt: {csv}:13: imgs/empty.png: empty file (0 bytes)"]
    assert (got["n"], got["failed"], got["unreadable_rows"]) == (10, 2, 2)
    assert [f["row"] for f in got["failures"]] == [f"{csv}:12", f"{csv}:13"]
    assert got["per_category"]["d"] == {"n": 1, "srcc": None, "plcc": None, "krcc": None, "rmse": None, "mae": None,
                                        "rmae": None, "computable": False}  # 1 of 2 scored: not computable
    assert got["per_category"]["a"]["n"] == 3
    code, out, _ = run(capsys, "eval", "--data", csv, "-m", square_bundle)
    assert code == 1 and "  d" in out and "not computable (fewer than 3 scored images)" in out
    assert "10 scored, 2 failed, 2 unreadable row(s) skipped" in out


def test_ic9600_folder_is_scored_on_its_test_split_unless_told(capsys, square_bundle, ic9600_dir, labelled):
    code, out, _ = run(capsys, "eval", "--data", ic9600_dir, "-m", square_bundle, "--format", "json")
    assert code == 0 and json.loads(out)["n"] == 4 and json.loads(out)["data"].endswith("test.txt")
    code, out, _ = run(capsys, "eval", "--data", ic9600_dir, "--split", "train", "-m", square_bundle, "--format", "json")
    assert code == 0 and json.loads(out)["n"] == 8 and set(json.loads(out)["per_category"]) == {"a", "b"}
    code, out, err = run(capsys, "eval", "--data", labelled[0], "--split", "test", "-m", square_bundle)
    assert code == 2 and out == "" and err.startswith("icrt: error: ") and "read whole" in err


@pytest.mark.parametrize("content,message", [("", "empty file"), ("image,score\nx.png,zero\n", "no readable row"),
                                             ("path,value\n", "header must have")])
def test_a_labels_file_that_gives_nothing_to_evaluate_is_exit_2(capsys, square_bundle, tmp_path, content, message):
    (tmp_path / "l.csv").write_text(content)
    code, out, err = run(capsys, "eval", "--data", tmp_path / "l.csv", "-m", square_bundle)
    assert code == 2 and out == "" and message in err.splitlines()[-1]


def test_output_is_written_atomically_and_checked_before_scoring(capsys, square_bundle, labelled, tmp_path):
    csv, _ = labelled
    code, out, _ = run(capsys, "eval", "--data", csv, "-m", square_bundle, "--format", "json", "-o",
                       tmp_path / "out" / "eval.json")
    assert code == 0 and out == "" and json.loads((tmp_path / "out" / "eval.json").read_text())["n"] == 9
    assert os.listdir(tmp_path / "out") == ["eval.json"]
    (tmp_path / "taken").write_text("a file")
    code, out, err = run(capsys, "eval", "--data", csv, "-m", square_bundle, "-o", tmp_path / "taken" / "x.json")
    assert code == 2 and out == "" and err.startswith("icrt: error: cannot write -o ") and "scored" not in err


def test_a_model_that_gives_nan_for_every_image_is_a_model_error(capsys, labelled, tmp_path):
    bundle = make_bundle(tmp_path / "nan", "const:nan")
    code, out, err = run(capsys, "eval", "--data", labelled[0], "-m", bundle, "--format", "json")
    assert code == 2 and json.loads(out)["n"] == 0 and json.loads(out)["failed"] == 9
    assert json.loads(out)["pooled"]["computable"] is False
    assert err.splitlines()[-1].startswith("icrt: error: the model gave a non-finite score")


def test_labels_on_another_scale_get_a_note(capsys, square_bundle, labelled):
    csv, rows = labelled
    with open(csv, "w") as f:
        f.write("image,score\n" + "".join(f"{n},{10 * s}\n" for n, s, _ in rows))
    code, out, _ = run(capsys, "eval", "--data", csv, "-m", square_bundle)
    assert code == 0 and "note: the labels span [0, 8], the model's scores [0, 1]" in out
    assert out.splitlines()[2].startswith("9 scored")  # no category column: no per-category rows


def test_eval_runs_without_torch_and_scipy(square_bundle, labelled):
    block = textwrap.dedent("""
        import sys, importlib.abc
        class _Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("torch", "scipy"):
                    raise ImportError(name + " is blocked in this test")
        sys.meta_path.insert(0, _Block())
        from icrt.runtime.cli import main
        code = main(sys.argv[1:])
        print("CODE", code, [m for m in ("torch", "scipy") if m in sys.modules])
    """)
    r = subprocess.run([sys.executable, "-c", block, "eval", "--data", labelled[0], "-m", square_bundle, "-q",
                        "--format", "json"], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == "CODE 0 []" and r.stderr == ""
