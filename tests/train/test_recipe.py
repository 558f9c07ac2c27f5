"""The default-model recipe end to end on a tiny labelled set (64 px instead of 384): what it ships and records."""
import json
import os

import pytest

from icrt.runtime.bundle.manifest import load_manifest
from tests.images import make_images


@pytest.mark.slow
def test_recipe_ships_every_form_fitted_on_every_label_with_parity_on_crops_and_rescales(tmp_path, monkeypatch):
    import icrt.runtime.bundle.defaults
    import icrt.train.recipes.default_model as recipe
    from icrt.runtime.backends.base import installed as library_installed
    from icrt.runtime.base.hardware import bf16_units

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    rows = make_images(tmp_path / "data", 60, categories=("a", "b", "c"))
    labels = tmp_path / "data" / "labels.csv"
    labels.write_text("image,score,category\n" + "".join(f"{r},{s},{c}\n" for r, s, c in rows))
    installed = tmp_path / "package_bundle"
    monkeypatch.setattr(icrt.runtime.bundle.defaults, "PACKAGE_BUNDLE", str(installed))
    work = tmp_path / "work"
    assert recipe.main(["--data", str(labels), "--work", str(work), "--image-size", "64", "--install"]) == 0

    dev, held, shipped = recipe.split_samples(str(labels))
    assert not {s.image for s in dev} & {s.image for s in held} and len(dev) + len(held) == len(rows)
    assert len(shipped) == len(rows)  # labels go to training: the shipped fit holds nothing back
    log = (work / "recipe-log.txt").read_text()
    assert f"--data {work / 'all.csv'} --out {work / 'all'}" in log
    # parity inputs: crops and rescales of the images (no labels), more of them than labelled images held back
    made = sorted(os.listdir(work / "parity-images"))
    assert len(made) == 2 * len(rows) and sum(n.endswith("-crop.jpg") for n in made) == len(rows)

    # exactly the files the manifest names, every form, nothing else
    man = load_manifest(str(installed))
    names = {n for p in man.precisions() for n in man.files[p].values()}
    assert sorted(os.listdir(installed)) == sorted(names | {"manifest.json", "export-report.json"})
    # bf16 (the fp32 file run in bfloat16) is declared where its parity could be measured: OpenVINO, bf16 units
    # (or, where the runtime would refuse it for this model, left out with the reason in the export report)
    report = json.loads((installed / "export-report.json").read_text())
    bf16 = ["bf16"] if bf16_units() and library_installed("openvino") and "bf16" not in report.get("not_offered", {}) else []
    assert man.precisions() == ["fp32", "fp16", "int8", *bf16]
    if bf16_units() and library_installed("openvino") and not bf16:
        assert report["not_offered"]["bf16"].startswith("bf16 not offered: the runtime would refuse it")
    # trained with the runtime's preprocessing, which the bundle declares: JPEG draft to half the input, bilinear
    assert (man.preprocessing.draft, man.preprocessing.interpolation) == (0.5, "bilinear")
    assert sorted(man.sha256) == sorted(names) and man.verify_files() is None  # every shipped file, checked
    assert man.files["int8"] == {"onnxruntime": "model.int8.onnx", "tensorrt": "model.int8.qdq.onnx"}
    # parity of the shipped files, measured on the crops and rescales, the TensorRT form included
    assert man.model_card.check_data["images"] == len(made) and man.parity["int8"].n == len(made)
    assert man.parity["int8"].label_srcc is None and "tensorrt" in man.parity["int8"].forms
    card = man.model_card
    forms = {"fp32", "fp16", "int8", "int8-tensorrt", *bf16}
    assert set(card.heldout) >= forms and card.heldout["images"] == len(held)
    assert set(card.extra["parity_images"]) >= forms - {"fp32"}
    assert card.extra["parity_images"]["images"] == len(made) and card.extra["parity_images"]["sources"] == len(rows)
    assert card.extra["parity_images"]["int8"]["srcc"] == round(man.parity["int8"].srcc, 4)
    text = (installed / "manifest.json").read_text() + (installed / "export-report.json").read_text()
    assert str(tmp_path) not in text and os.getcwd() not in text  # no path of this machine
    assert json.loads((work / "bundle" / "manifest.json").read_text()) == json.loads((installed / "manifest.json").read_text())
