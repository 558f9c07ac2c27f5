"""Fixtures: tiny generated images, data sets in each supported layout, and a tiny OpenCLIP config."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
from PIL import Image


def complexity_image(level: float, size: int = 48, seed: int = 0) -> Image.Image:
    """A flat grey image with a share ``level`` of its pixels replaced by random colours."""
    rng = np.random.default_rng(seed)
    img = np.full((size, size, 3), 128, np.uint8)
    mask = rng.random((size, size)) < level
    img[mask] = rng.integers(0, 256, (int(mask.sum()), 3), dtype=np.uint8)
    return Image.fromarray(img)


def make_images(folder, n: int, categories=("a", "b"), size: int = 48, seed: int = 0):
    """Write n images; returns [(relative path, score, category)] with score = noise level."""
    rows = []
    os.makedirs(os.path.join(folder, "images"), exist_ok=True)
    for i in range(n):
        level = (i % 8) / 7.0
        cat = categories[i % len(categories)]
        name = f"{cat}_{i}.png"
        complexity_image(level, size, seed + i).save(os.path.join(folder, "images", name))
        rows.append((f"images/{name}", round(0.05 + 0.9 * level, 4), cat))
    return rows


def interrupt_after_first_epoch(trainer) -> None:
    """Run ``trainer.fit()`` and kill it (KeyboardInterrupt) once epoch 1 was saved, as a crash would."""
    calls = []
    validate = type(trainer).validate

    def crash_in_second_epoch():
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return validate(trainer)

    trainer.validate = crash_in_second_epoch
    with pytest.raises(KeyboardInterrupt):
        trainer.fit()


@pytest.fixture
def labels_csv(tmp_path):
    rows = make_images(tmp_path, 32)
    path = tmp_path / "labels.csv"
    path.write_text("image,score,category\n" + "".join(f"{r},{s},{c}\n" for r, s, c in rows))
    return str(path)


@pytest.fixture
def captions_csv(tmp_path, labels_csv):
    import csv

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


TINY_CLIP = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


@pytest.fixture(scope="session")
def tiny_clip_config(tmp_path_factory):
    path = tmp_path_factory.mktemp("clipcfg") / "icrt-tiny-clip.json"
    path.write_text(json.dumps(TINY_CLIP))
    return str(path)


@pytest.fixture(autouse=True, scope="session")
def no_model_hub():
    """Tests never reach a model hub: pretrained weights come from files or installed weights packages."""
    os.environ["HF_HUB_OFFLINE"] = "1"


@pytest.fixture(autouse=True, scope="session")
def one_torch_thread():
    """Tiny models run many times faster on one thread than on two on a shared 2-core machine."""
    import torch

    torch.set_num_threads(1)
