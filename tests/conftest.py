"""Fixtures: data sets in each supported layout (generated images, tests/images.py), a tiny OpenCLIP config.

Loaded for tests/runtime and tests/icrt too, so it needs no torch (nor scipy): the one-thread setting below applies to the
top-level tests only, and only where torch is installed."""
from __future__ import annotations

import csv
import os
from pathlib import Path

import pytest

from tests.images import make_images
from tests.tiny import CLIP, write_clip_config

TORCH_FREE_TESTS = (Path(__file__).parent / "runtime", Path(__file__).parent / "icrt")  # run without torch in CI


@pytest.fixture
def labels_csv(tmp_path):
    rows = make_images(tmp_path, 32)
    path = tmp_path / "labels.csv"
    path.write_text("image,score,category\n" + "".join(f"{r},{s},{c}\n" for r, s, c in rows))
    return str(path)


@pytest.fixture
def captions_csv(tmp_path, labels_csv):
    rows = list(csv.DictReader(open(labels_csv)))
    path = tmp_path / "captions.csv"
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image", "caption"])
        for r in rows:
            busy = "a busy image full of coloured noise" if float(r["score"]) > 0.5 else "a plain grey image"
            w.writerow([r["image"], f"This image shows {busy}. The main objects are dots."])
    return str(path)


@pytest.fixture
def ic9600_dir(tmp_path):
    root = tmp_path / "ic9600"
    rows = make_images(root, 12)
    (root / "train.txt").write_text("".join(f"{os.path.basename(r)}  {s}\n" for r, s, _ in rows[:8]))
    (root / "test.txt").write_text("".join(f"{os.path.basename(r)}  {s}\n" for r, s, _ in rows[8:]))
    return str(root)


@pytest.fixture(scope="session")
def tiny_clip_config(tmp_path_factory):
    return write_clip_config(tmp_path_factory.mktemp("clipcfg"), "icrt-tiny-clip.json", CLIP)


@pytest.fixture(autouse=True, scope="session")
def no_model_hub():
    """Tests never reach a model hub: pretrained weights come from files or installed weights packages."""
    os.environ["HF_HUB_OFFLINE"] = "1"


SLOW_MARKERS = ("server", "ray", "gpu")  # what starts a server or a cluster, or needs a GPU, is slow too


def pytest_collection_modifyitems(config, items):
    for item in items:
        if any(item.get_closest_marker(m) for m in SLOW_MARKERS) and not item.get_closest_marker("slow"):
            item.add_marker(pytest.mark.slow)


def pytest_collection_finish(session):
    """One torch thread: tiny models run many times faster on one thread than on two on a shared 2-core machine.
    Set before any test or fixture runs, when top-level tests were collected (they have imported torch then);
    tests/runtime and tests/icrt alone never load torch."""
    if all(any(d in item.path.parents for d in TORCH_FREE_TESTS) for item in session.items):
        return
    try:
        import torch
    except ImportError:
        return
    torch.set_num_threads(1)
