"""The runtime must import and work with torch made unimportable."""
import subprocess
import sys
import textwrap


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
        from runtime.preprocess import Preprocessing, load_rgb, to_model_input
        x, pos = to_model_input(load_rgb({str(tmp_path / 'x.png')!r}), Preprocessing(resize="patches", size=224))
        print(x.shape, len(pos))
    """)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "(3, 3, 224, 224) 3"  # 300x200 -> 336x224: three patches
