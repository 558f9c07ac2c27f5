"""The runtime must import and work with torch made unimportable. (CI also runs tests/runtime where torch is not
installed at all; the blocker refuses torch the same way there.)"""
import json
import subprocess
import sys
import textwrap

import pytest

from tests.images import textured
from tests.runtime.fixtures import needs_matplotlib

BLOCK_TORCH = textwrap.dedent("""
    import sys, importlib.abc
    class _NoTorch(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "torch" or name.startswith("torch."):
                raise ImportError("torch is blocked in this test")
    sys.meta_path.insert(0, _NoTorch())
""")


def run_without_torch(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", BLOCK_TORCH + textwrap.dedent(code)],
                          capture_output=True, text=True, timeout=120)


def test_blocker_really_blocks_torch():
    r = run_without_torch("import torch")
    assert r.returncode != 0 and "torch is blocked" in r.stderr


def test_every_runtime_module_imports_without_torch():
    r = run_without_torch("""
        import importlib, pkgutil, runtime
        names = [m.name for m in pkgutil.walk_packages(runtime.__path__, "runtime.")]
        for n in names:
            importlib.import_module(n)
        assert "torch" not in sys.modules
        print(len(names))
    """)
    assert r.returncode == 0, r.stderr
    assert int(r.stdout.strip()) >= 2


def test_preprocessing_runs_without_torch(tmp_path):
    from PIL import Image
    Image.new("RGB", (300, 200), (10, 200, 30)).save(tmp_path / "x.png")
    r = run_without_torch(f"""
        from icrt.runtime.bundle.preprocessing import Preprocessing
        from icrt.runtime.scoring.preprocess import load_rgb, to_model_input
        x, pos = to_model_input(load_rgb({str(tmp_path / 'x.png')!r}), Preprocessing(resize="patches", size=224))
        print(x.shape, len(pos))
    """)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "(3, 3, 224, 224) 3"  # 300x200 -> 336x224: three patches


# --- scoring with torch unimportable ---------------------------------------------------------------


@pytest.fixture(scope="module")
def bundles(square_bundle, patches_bundle):
    return {"square": square_bundle, "patches": patches_bundle}


@needs_matplotlib  # the CLI run draws heatmaps
def test_scorer_and_cli_score_images_without_torch(tmp_path, bundles):
    from icrt.runtime import Scorer

    textured(150, 90, seed=2).save(tmp_path / "a.png")
    textured(64, 64, seed=3, level=0.9).save(tmp_path / "b.jpg")
    expected = {r: [x["score"] for x in Scorer.load(b).score_many([str(tmp_path / "a.png"), str(tmp_path / "b.jpg")])]
                for r, b in bundles.items()}
    r = run_without_torch(f"""
        import json
        from icrt.runtime import Scorer
        from icrt.runtime.cli import main
        out = {{}}
        for name, bundle in {bundles!r}.items():
            s = Scorer.load(bundle, precision="fp32")
            out[name] = [x["score"] for x in s.score_many([{str(tmp_path / 'a.png')!r}, {str(tmp_path / 'b.jpg')!r}])]
        s = Scorer.load({bundles['square']!r}, precision="int8")
        out["int8"] = s.score({str(tmp_path / 'a.png')!r})["score"]
        code = main(["score", {str(tmp_path)!r}, "-m", {bundles['patches']!r}, "--format", "json",
                     "-o", {str(tmp_path / 'out.json')!r}, "--heatmap", {str(tmp_path / 'maps')!r}])
        out["cli_code"] = code
        out["torch_loaded"] = any(m == "torch" or m.startswith("torch.") for m in sys.modules)
        print(json.dumps(out))
    """)
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout.strip().splitlines()[-1])
    assert got["square"] == expected["square"] and got["patches"] == expected["patches"]
    assert 0 <= got["int8"] <= 1 and got["cli_code"] == 0 and got["torch_loaded"] is False
    recs = json.loads((tmp_path / "out.json").read_text())
    assert [x["score"] for x in recs] == expected["patches"] and len(list((tmp_path / "maps").iterdir())) == 2


def test_cli_starts_light():
    """`icrt` start-up loads no numpy/onnxruntime; one-image scoring loads no matplotlib/tqdm/torch."""
    r = run_without_torch("""
        import icrt.runtime.cli
        heavy = [m for m in ("numpy", "onnxruntime", "PIL", "matplotlib", "tqdm") if m in sys.modules]
        print(",".join(heavy) or "none")
    """)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "none"


def test_one_image_score_imports_no_plotting_or_progress(tmp_path, bundles):
    textured(40, 30).save(tmp_path / "one.png")
    r = run_without_torch(f"""
        from icrt.runtime.cli import main
        code = main(["score", {str(tmp_path / 'one.png')!r}, "-m", {bundles['square']!r}])
        print("CODE", code, [m for m in ("matplotlib", "tqdm", "scipy", "torch") if m in sys.modules])
    """)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == "CODE 0 []"
