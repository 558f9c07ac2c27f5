"""``icrt report``: one self-contained HTML page from ``icrt score`` results (JSON, JSONL, CSV) or an ``icrt batch``
folder (Parquet parts; skipped where pyarrow is missing). Torch-free; the scores come from the tiny conv net."""
from __future__ import annotations

import csv
import html
import json
import os
import re
import statistics
from html.parser import HTMLParser

import pytest

import icrt.runtime.report as report
import icrt.runtime.report.html as report_html
import icrt.runtime.report.readers as readers
import icrt.runtime.report.statistics as report_stats
from tests.images import textured
from tests.runtime.fixtures import run_cli

EVIL = "<img src=x onerror=alert(1)>.png"  # a valid file name that is also HTML
FORMULA = "=sum.png"  # written '=sum.png in CSV (runtime.tools.formats.csv_safe)


@pytest.fixture(scope="module")
def scored(tmp_path_factory, square_bundle):
    """Generated images in three folders (one broken file, an HTML-like and a formula-like name), scored by
    ``icrt score`` into scores.json, scores.jsonl and scores.csv."""
    from icrt.runtime.cli import main

    root = tmp_path_factory.mktemp("report")
    imgs = root / "imgs"
    for sub in ("plain", "busy", "mixed folder"):
        (imgs / sub).mkdir(parents=True)
    for i in range(4):
        textured(80, 60, seed=i, level=0.05 * i).save(imgs / "plain" / f"p{i}.png")
        textured(60, 90, seed=10 + i, level=0.6 + 0.1 * i).save(imgs / "busy" / f"b{i}.jpg")
    textured(70, 70, seed=20, level=0.3).save(imgs / "mixed folder" / EVIL)
    textured(70, 70, seed=21, level=0.5).save(imgs / "mixed folder" / FORMULA)
    (imgs / "mixed folder" / "bad.png").write_bytes(b"not an image at all")
    out = {}
    for fmt in ("json", "jsonl", "csv"):
        out[fmt] = str(root / f"scores.{fmt}")
        code = main(["score", str(imgs), "--recursive", "-m", square_bundle, "-o", out[fmt], "--format", fmt])
        assert code == 1  # one file failed
    with open(out["json"]) as f:
        out["records"] = json.load(f)
    out["root"] = str(root)
    return out


def make(capsys, tmp_path, source, *extra):
    dest = str(tmp_path / "report.html")
    code, out, err = run_cli(capsys, "report", source, "-o", dest, *extra)
    assert code == 0, err
    with open(dest, encoding="utf-8") as f:
        return f.read(), out


def section(page: str, heading: str) -> str:
    start = page.index(f"<h2>{heading}")
    return page[start:page.index("</section>", start)]


def sheet_scores(page: str, heading: str) -> list[float]:
    return [float(v) for v in re.findall(r"<figcaption><b>([0-9.]+)</b>", section(page, heading))]


def folder_row(page: str, folder: str) -> tuple[int, int, str]:
    m = re.search(r'<tr><td class="p">' + re.escape(html.escape(folder)) + r'</td><td class="n">([\d,]+)</td>'
                  r'<td class="n">([\d,]+)</td><td class="n">([^<]*)</td>', page)
    assert m, folder
    return int(m[1].replace(",", "")), int(m[2].replace(",", "")), m[3]


class Tags(HTMLParser):
    def __init__(self):
        super().__init__()
        self.seen = []

    def handle_starttag(self, tag, attrs):
        self.seen.append((tag, attrs))


def check_page(page: str, records: list[dict]):
    """What every report of these records must show."""
    # self-contained: no script, no link; every src is a data: URI (the HTML as a browser's parser reads it)
    tags = Tags()
    tags.feed(page)
    tags.close()
    assert not {"script", "link", "iframe", "object", "embed", "a", "base"} & {t for t, _ in tags.seen}
    urls = [v for _, attrs in tags.seen for k, v in attrs if k in ("src", "href", "srcset", "action", "poster")]
    assert urls and all(v.startswith("data:image/jpeg;base64,") for v in urls)
    assert not any(k.startswith("on") for _, attrs in tags.seen for k, _ in attrs)
    assert "http://" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "") and "https://" not in page
    assert "Content-Security-Policy" in page
    # the HTML-like name is text, never markup
    assert EVIL not in page and html.escape(EVIL) in page
    # errors: path and message
    bad = [r for r in records if "error" in r]
    errors = section(page, "Errors")
    assert f"Errors ({len(bad)})" in errors
    for r in bad:
        assert html.escape(r["image"]) in errors and html.escape(r["error"]) in errors
    # thumbnails: every scored image (fewer than --thumbs), ordered by score, each a real thumbnail
    good = sorted(r["score"] for r in records if "error" not in r)
    spread = sheet_scores(page, "From simplest to most complex")
    assert spread == sorted(spread) and len(spread) == len(good)
    assert spread == pytest.approx(good, abs=6e-5)
    assert section(page, "From simplest to most complex").count('src="data:image/jpeg;base64,') == len(good)
    assert sheet_scores(page, "Simplest") == pytest.approx(good[:report_stats.EXTREMES], abs=6e-5)
    assert sheet_scores(page, "Most complex") == pytest.approx(good[-report_stats.EXTREMES:], abs=6e-5)
    # per-folder counts, errors and medians
    folders: dict[str, list] = {}
    for r in records:
        folders.setdefault(os.path.dirname(r["image"]), []).append(r)
    from icrt.runtime.report.html import SCORE_SCALE_NOTE, common_root, relative_to

    root = common_root(list(folders))  # folders are shown relative to the folder that holds them all
    assert root and html.escape(root) in section(page, "Folders") and html.escape(SCORE_SCALE_NOTE) in page
    for folder, rs in folders.items():
        scores = [r["score"] for r in rs if "error" not in r]
        assert folder_row(page, relative_to(folder, root)) == (len(rs), len(rs) - len(scores),
                                                               f"{statistics.median(scores):.4f}")


def test_report_from_json_scores(scored, capsys, tmp_path):
    page, out = make(capsys, tmp_path, scored["json"])
    check_page(page, scored["records"])
    assert "11 images, 10 scored, 1 errors" in out
    assert "not a recognised image format" in page


def test_report_from_csv_and_jsonl_scores(scored, capsys, tmp_path):
    for fmt in ("csv", "jsonl"):
        page, _ = make(capsys, tmp_path, scored[fmt])
        check_page(page, scored["records"])


def test_csv_formula_cell_and_relative_paths(scored, square_bundle, capsys, tmp_path, monkeypatch):
    """Relative paths are found from the folder of the scores file too; a CSV cell icrt score wrote as '=sum.png
    is the image =sum.png again."""
    folder = os.path.join(scored["root"], "imgs", "mixed folder")
    monkeypatch.chdir(folder)
    code, _, _ = run_cli(capsys, "score", FORMULA, EVIL, "-m", square_bundle, "-o", "rel.csv", "--format", "csv")
    assert code == 0
    with open("rel.csv", newline="") as f:
        assert [row["image"] for row in csv.DictReader(f)] == ["'" + FORMULA, EVIL]
    monkeypatch.chdir(tmp_path)
    page, _ = make(capsys, tmp_path, os.path.join(folder, "rel.csv"))
    assert 'title="' + html.escape(FORMULA) + " (" in page and "'" + FORMULA not in page
    assert page.count('src="data:image/jpeg;base64,') >= 2 and 'class="ph"' not in page


def test_thumbs_option_and_missing_image_placeholder(scored, capsys, tmp_path):
    records = [dict(r) for r in scored["records"]]
    records[0]["image"] = str(tmp_path / "gone.png")  # scored once, missing now
    records[1]["image"] = str(tmp_path)  # a folder where an image was
    src = tmp_path / "moved.json"
    src.write_text(json.dumps(records))
    page, _ = make(capsys, tmp_path, src)  # the images are not below the scores file's folder: not shown
    spread = section(page, "From simplest to most complex")
    assert spread.count('class="ph"') == 10 and spread.count(report_html.OUTSIDE_ROOT) == 8  # (two are below it)
    root = os.path.commonpath([str(tmp_path), scored["root"]])  # a root the user names: below it, shown
    page, _ = make(capsys, tmp_path, src, "--title", "<b>mine</b>", "--images-root", root)
    assert "<title>&lt;b&gt;mine&lt;/b&gt;</title>" in page
    spread = section(page, "From simplest to most complex")
    assert spread.count('class="ph"') == 2 and "no such file" in spread and "is a directory, not an image" in spread
    assert spread.count('src="data:image/jpeg;base64,') == 8
    page, _ = make(capsys, tmp_path, src, "--thumbs", "3", "--images-root", root)
    assert len(sheet_scores(page, "From simplest to most complex")) == 3
    assert len(sheet_scores(page, "Simplest")) == 3
    page, _ = make(capsys, tmp_path, src, "--thumbs", "0")
    assert "<img" not in page and "From simplest" not in page


def test_bad_inputs_are_one_line_errors(scored, capsys, tmp_path):
    cases = {
        "empty.json": "",
        "garbage.json": "hello there\n",
        "numbers.json": "[1, 2]",
        "cut.json": '[{"image": "a.png", "score": 0.5}, {"image": "b.p',
        "text-score.json": '[{"image": "a.png", "score": "high"}]',
        "nan.json": '[{"image": "a.png", "score": NaN}]',
        "neither.json": '[{"image": "a.png"}]',
        "no-image.json": '[{"score": 0.5}]',
        "after.json": '[{"image": "a.png", "score": 0.5}] trailing',
        "comma.json": '[{"image": "a.png", "score": 0.5},]',
        "object.jsonl": '{"image": "a.png", "score": 0.5}\n{"image": \n',
        "columns.csv": "path,value\na.png,0.5\n",
        "score.csv": "image,score,error\na.png,zero,\n",
        "fields.csv": "image,score,error\na.png,0.5\n",
        "width.csv": "image,score,patches,width,height,error\na.png,0.5,1,-3,4,\n",
        "empty-list.json": "[]",
    }
    for name, text in cases.items():
        p = tmp_path / name
        p.write_text(text)
        code, out, err = run_cli(capsys, "report", p, "-o", tmp_path / "r.html")
        assert code == 2, name
        assert err.startswith("icrt: error: " + str(p)) and err.count("\n") == 1, (name, err)
        assert not (tmp_path / "r.html").exists()
    for args, says in [((tmp_path / "missing.json",), "no such file"),
                       ((tmp_path,), "no part-*.parquet"),
                       ((scored["json"], "-o", tmp_path), "not a regular file"),
                       ((scored["json"], "-o", scored["json"]), "it is the input")]:
        code, out, err = run_cli(capsys, "report", *args)
        assert code == 2 and says in err and err.count("\n") == 1, (args, err)
    with pytest.raises(SystemExit) as e:
        run_cli(capsys, "report", scored["json"], "--thumbs", "-1")
    assert e.value.code == 2 and "expected 0 .. 500" in capsys.readouterr().err
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    code, _, err = run_cli(capsys, "report", scored["json"], "-o", fifo)
    assert code == 2 and "not a regular file" in err
    code, _, err = run_cli(capsys, "report", fifo)
    assert code == 2 and err.startswith("icrt: error: " + str(fifo))


def test_json_list_is_streamed_across_chunks(tmp_path, monkeypatch):
    records = [{"image": f"d{i % 3}/x\"{i},].png", "score": i / 10} if i % 4 else {"image": f"e{i}.png", "error": "]{"}
               for i in range(40)]
    p = tmp_path / "s.json"
    p.write_text("\ufeff" + json.dumps(records, indent=1))
    monkeypatch.setattr(readers, "CHUNK", 7)
    rows = list(readers.Source(str(p)).rows())
    assert [r.image for r in rows] == [r["image"] for r in records]
    assert [r.score for r in rows] == [r.get("score") for r in records]
    assert [r.error for r in rows] == [r.get("error") for r in records]


def test_memory_bounded_selection(tmp_path, monkeypatch):
    """More rows than every limit: the sample, exact lists and error list stay at their caps; the extremes and
    the first / last thumbnails are still exact; binned medians are close."""
    for k, v in {"SAMPLE_SIZE": 50, "EXACT_FOLDER": 20, "EXACT_GLOBAL": 100, "MAX_FOLDERS": 3, "MAX_ERRORS": 5,
                 "FOLDER_BINS": 512, "GLOBAL_BINS": 1024}.items():
        monkeypatch.setattr(report_stats, k, v)
    n = 3000
    scores = [((i * 7919) % n) / n * 3 - 1 for i in range(n)]  # -1 .. 2: a permutation, not in [0, 1]
    p = tmp_path / "big.jsonl"
    with open(p, "w") as f:
        for i, s in enumerate(scores):
            rec = {"image": f"f{i % 5}/{i}.png", "error": f"bad {i % 2}"} if i % 10 == 0 else \
                {"image": f"f{i % 5}/{i}.png", "score": s}
            f.write(json.dumps(rec) + "\n")
    src = readers.Source(str(p))
    page, rep = report.render_source(src, thumbs=9, title=None)
    good = [s for i, s in enumerate(scores) if i % 10]
    assert len(rep.sample) == 50 and rep.dist.values is None and len(rep.errors) == 5
    assert rep.error_count == n // 10 and rep.scored == len(good)
    assert all(f.dist.values is None for f in rep.folders.values()) and len(rep.folders) == 3
    assert rep.other.rows == n - sum(f.rows for f in rep.folders.values()) > 0
    spread = [x.score for x in rep.spread()]
    assert spread == sorted(spread) and len(spread) == 9
    assert spread[0] == min(good) and spread[-1] == max(good)
    assert [x.score for x in rep.simplest()] == sorted(good)[:report_stats.EXTREMES]
    assert [x.score for x in rep.most_complex()] == sorted(good)[-report_stats.EXTREMES:]
    assert rep.dist.quantile(0.5) == pytest.approx(statistics.median(good), abs=3 / 1024)
    for name, f in rep.folders.items():
        exact = statistics.median(s for i, s in enumerate(scores) if i % 10 and f"f{i % 5}" == name)
        assert f.dist.quantile(0.5) == pytest.approx(exact, abs=3 / 512)
    assert "other folders" in page and "The first 5 of 300 errors" in page and "\u2248" in page
    assert page.count('class="ph"') >= 9  # no such images here: placeholders, no crash


def test_dist_quantiles_exact_then_binned():
    d = report_stats.Dist(0.0, 1.0, exact_limit=10, bins=1000)
    for v in (0.3, 0.1, 0.2):
        d.add(v)
    assert d.exact and d.quantile(0.5) == 0.2 and d.quantile(0) == 0.1 and d.quantile(1) == 0.3
    d.add(0.4)
    assert d.quantile(0.5) == pytest.approx(0.25)
    for i in range(1000):
        d.add(i / 1000)
    assert not d.exact and d.quantile(0.5) == pytest.approx(statistics.median([0.1, 0.2, 0.3, 0.4] +
                                                                               [i / 1000 for i in range(1000)]), abs=2e-3)


# --- icrt batch folders (Parquet) ------------------------------------------------------------------------------


def write_batch(folder, records, parts=2, summary=None):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    os.makedirs(folder, exist_ok=True)
    step = -(-len(records) // parts)
    for k in range(parts):
        chunk = records[k * step:(k + 1) * step]
        table = pa.table({
            "image": pa.array([r["image"] for r in chunk], pa.string()),
            "score": pa.array([r.get("score") for r in chunk], pa.float64()),
            "error": pa.array([r.get("error") for r in chunk], pa.string()),
            "width": pa.array([r.get("width") for r in chunk], pa.int32()),
            "height": pa.array([r.get("height") for r in chunk], pa.int32()),
            "patches": pa.array([r.get("patches") for r in chunk], pa.int32()),
        })
        pq.write_table(table, os.path.join(folder, f"part-{k:05d}.parquet"))
    if summary is not None:
        with open(os.path.join(folder, "summary.json"), "w") as f:
            json.dump(summary, f)
    return str(folder)


def test_report_from_batch_folder(scored, capsys, tmp_path):
    summary = {"count": 11, "errors": 1, "bundle": {"name": "tiny-<b>d2s</b>", "version": 3}, "images_per_s": 12.5}
    folder = write_batch(tmp_path / "out", scored["records"], parts=3, summary=summary)
    root = os.path.commonpath([str(tmp_path), scored["root"]])  # the images are elsewhere: a root the user names
    page, out = make(capsys, tmp_path, folder, "--images-root", root)
    check_page(page, scored["records"])
    assert "3 Parquet part(s)" in page and "No completion marker" in page
    run = section(page, "Run")
    assert "<th" in run and ">model<" in run and "tiny-&lt;b&gt;d2s&lt;/b&gt;" in run and "12.5" in run
    part = os.path.join(folder, "part-00001.parquet")  # one part alone
    page, _ = make(capsys, tmp_path, part)
    assert "Parquet file" in page


def test_bad_batch_folders_are_one_line_errors(scored, capsys, tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    bad = tmp_path / "cols"
    bad.mkdir()
    pq.write_table(pa.table({"image": ["a.png"], "score": [0.5]}), bad / "part-00000.parquet")
    typed = tmp_path / "typed"
    typed.mkdir()
    pq.write_table(pa.table({"image": ["a.png"], "score": ["0.5"], "error": [None]}), typed / "part-00000.parquet")
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "part-00000.parquet").write_bytes(b"PAR1 not really")
    fifo = tmp_path / "fifo"
    write_batch(fifo, scored["records"][:2], parts=1)
    os.mkfifo(fifo / "part-00009.parquet")  # would block a read forever
    for folder, says in [(bad, "no column error"), (typed, "column score has type string"),
                         (junk, "not a readable Parquet file"), (fifo, "not an icrt batch part: it is a FIFO")]:
        code, _, err = run_cli(capsys, "report", folder, "-o", tmp_path / "r.html")
        assert code == 2 and err.startswith("icrt: error: " + str(folder)) and says in err, err
        assert err.count("\n") == 1


def test_a_bad_summary_is_noted_not_fatal(scored, capsys, tmp_path):
    """N15: the parts are the data; a summary.json that is not JSON, too large, nested too deeply, a FIFO or a
    link is not shown, with a note saying why, and the report is made."""
    cases = {"json": ("{not json", "summary.json not shown: Expecting property name"),
             "large": ('{"x": "' + "a" * readers.MAX_SUMMARY_BYTES + '"}', "larger than"),
             "deep": ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
             "fifo": (None, "is a FIFO"), "link": ("/etc/passwd", "is a symbolic link")}
    for name, (text, says) in cases.items():
        folder = tmp_path / name
        write_batch(folder, scored["records"][:3], parts=1)
        if name == "fifo":
            os.mkfifo(folder / "summary.json")
        elif name == "link":
            (folder / "summary.json").symlink_to(text)
        else:
            (folder / "summary.json").write_text(text)
        page, out = make(capsys, tmp_path, folder)
        assert says in section(page, "Run (summary.json)"), name
        assert "3 images" in out


def test_batch_folder_without_pyarrow(scored, capsys, tmp_path, monkeypatch):
    folder = tmp_path / "out"
    folder.mkdir()
    (folder / "part-00000.parquet").write_bytes(b"")
    monkeypatch.setitem(__import__("sys").modules, "pyarrow", None)
    monkeypatch.setitem(__import__("sys").modules, "pyarrow.parquet", None)
    code, _, err = run_cli(capsys, "report", folder, "-o", tmp_path / "r.html")
    from icrt.runtime.base.install import extra_hint

    assert code == 2 and err.count("\n") == 1 and extra_hint("scale") in err


# --- hardening, round 2 (N6, N10, N20) ---------------------------------------------------------------------------


def placeholders(page: str) -> list[str]:
    return re.findall(r'<div class="ph" title="[^"]*">([^<]*)</div>', page)


def test_thumbnails_only_from_below_the_scores_folder(capsys, tmp_path):
    """N6: a scores file cannot make the page embed images from elsewhere on this machine (absolute paths, ../, a
    link out), and the placeholder does not tell whether such a path exists or what it is."""
    outside = tmp_path / "private"
    outside.mkdir()
    textured(50, 50, seed=1).save(outside / "id.jpg")
    here = tmp_path / "shared"
    here.mkdir()
    textured(50, 50, seed=2).save(here / "mine.jpg")
    (here / "link.jpg").symlink_to(outside / "id.jpg")
    records = [{"image": str(outside / "id.jpg"), "score": 0.9}, {"image": "/etc/shadow", "score": 0.8},
               {"image": str(outside / "missing.jpg"), "score": 0.7}, {"image": "../private/id.jpg", "score": 0.6},
               {"image": "link.jpg", "score": 0.5}, {"image": "mine.jpg", "score": 0.4},
               {"image": str(here / "gone.jpg"), "score": 0.3}]
    src = here / "s.json"
    src.write_text(json.dumps(records))
    page, _ = make(capsys, tmp_path, src)
    spread = section(page, "From simplest to most complex")
    assert spread.count('src="data:image/jpeg;base64,') == 1  # mine.jpg only
    assert placeholders(spread) == ["no such file", *[html.escape(report_html.OUTSIDE_ROOT)] * 5]
    assert "exists" not in page and "not a recognised image format" not in page and "permission" not in page
    # the user names a wider root: then they are shown
    page, _ = make(capsys, tmp_path, src, "--images-root", str(tmp_path))
    spread = section(page, "From simplest to most complex")
    assert spread.count('src="data:image/jpeg;base64,') == 4  # id.jpg (absolute, ../ and link) and mine.jpg
    code, _, err = run_cli(capsys, "report", str(src), "-o", str(tmp_path / "r.html"), "--images-root",
                           str(tmp_path / "nope"))
    assert code == 2 and err.count("\n") == 1 and "--images-root" in err and "not a folder" in err


def test_relative_paths_from_the_scores_folder_or_the_images_root(capsys, tmp_path, monkeypatch):
    """N20: a scores file written from another working folder: relative paths are looked up from the scores file's
    folder, and from --images-root when the names are relative to that."""
    data = tmp_path / "data"
    (data / "photos").mkdir(parents=True)
    textured(50, 50, seed=3).save(data / "photos" / "a.jpg")
    (data / "s.json").write_text(json.dumps([{"image": "photos/a.jpg", "score": 0.5}]))
    out = tmp_path / "out"
    out.mkdir()
    (out / "s.json").write_text(json.dumps([{"image": "photos/a.jpg", "score": 0.5}]))  # written from data/
    monkeypatch.chdir(tmp_path)  # anywhere else
    page, _ = make(capsys, tmp_path, str(data / "s.json"))
    assert page.count('src="data:image/jpeg;base64,') == 3  # simplest, spread, most complex
    page, _ = make(capsys, tmp_path, str(out / "s.json"), "--images-root", str(data))
    assert page.count('src="data:image/jpeg;base64,') == 3


def test_extreme_scores_and_deep_json_are_one_line_or_a_page(capsys, tmp_path):
    """N10: scores of -1e308 and 1e308 (finite, their difference is not) make a page; JSON nested 100,000 deep is
    one line."""
    src = tmp_path / "h.json"
    src.write_text('[{"image":"a.jpg","score":1e308},{"image":"b.jpg","score":-1e308},{"image":"c.jpg","score":0}]')
    page, out = make(capsys, tmp_path, src)
    assert "3 images, 3 scored" in out and "nan" not in page.lower().replace("nanum", "")
    assert "1e+308" in page and ">inf<" not in page
    for name, text in (("deep.json", "[" + "[" * 100_000 + "]" * 100_000 + "]"),
                       ("deep.jsonl", '{"a": ' + "[" * 100_000 + "]" * 100_000 + "}\n")):
        (tmp_path / name).write_text(text)
        code, _, err = run_cli(capsys, "report", str(tmp_path / name), "-o", str(tmp_path / "r.html"))
        assert code == 2 and err.count("\n") == 1 and "nested too deeply" in err


@pytest.mark.parametrize("peak", [1, 2, 3, 4, 5, 6, 7, 9, 11, 17, 99, 101, 1234, 999_999])
def test_histogram_count_labels_are_distinct_whole_numbers(peak):
    """N20: the count axis of small histograms labelled 0, 1, 2, 2, 3."""
    step, ticks = report_html.count_ticks(peak)
    labels = [step * k for k in range(ticks + 1)]
    assert len(set(labels)) == len(labels) and labels[-1] >= peak and 1 <= ticks <= 5
    assert labels[-1] < peak + step


def test_histogram_labels_in_the_page(capsys, tmp_path):
    src = tmp_path / "s.json"
    src.write_text(json.dumps([{"image": f"{i}.jpg", "score": s} for i, s in enumerate([0.1, 0.1, 0.1, 0.5])]))
    page, _ = make(capsys, tmp_path, src)
    svg = page[page.index("<svg"):page.index("</svg>")]
    labels = re.findall(r'text-anchor="end" fill="#5b6475">([^<]*)</text>', svg)
    assert labels == ["0", "1", "2", "3"]


def test_score_ticks_never_repeat_and_folders_drop_their_common_root():
    from icrt.runtime.report.html import common_root, relative_to, score_ticks

    for lo, hi in ((0.0, 1.0), (0.999, 0.9999), (0.5, 0.5000001), (-1e300, 1e300)):
        labels = score_ticks(lo, hi)
        assert len(labels) == 11 and len(set(labels)) == 11, (lo, hi, labels)
    assert score_ticks(0.0, 1.0)[:3] == ["0", "0.1", "0.2"]
    keys = ["/data/shoot/a", "/data/shoot/b/c", "/data/shoot"]
    root = common_root(keys)
    assert root == "/data/shoot" and [relative_to(k, root) for k in keys] == ["a", "b/c", "."]
    assert common_root(["only/one"]) == "" and common_root(["/abs", "rel"]) == ""


def test_the_run_summary_is_a_table_of_what_ran_and_skips_odd_fields():
    from icrt.runtime.report.html import _summary_items

    rows = dict(_summary_items({
        "counts": {"rows": 1200, "scored": 1190, "errors": 10, "parts": 3, "inputs": 1200, "scored_this_run": 1190,
                   "skipped_resume": 0},
        "speed": {"images": 1190, "seconds": 40.0, "images_per_s": 29.75}, "runner": "local", "workers": 1,
        "bundle": {"name": "icrt-default", "kind": "d2s", "precision": "int8", "backend": "auto", "path": "/b"},
        "versions": {"icrt": "0.1.0", "numpy": ["not", "plain", {"x": 1}]}, "histogram": {"counts": [1, 2]},
        "weird": {"nested": {"deep": 1}}, "note": "hello"}))
    assert rows["images"] == "1,200 rows, 1,190 scored, 10 errors, in 3 Parquet parts"
    assert rows["speed"] == "29.75 images/s, 40 s" and rows["model"] == "icrt-default (d2s), int8, backend auto"
    assert rows["versions"] == "icrt 0.1.0" and rows["note"] == "hello" and "weird" not in rows
    assert "histogram" not in rows and "this run" in rows
