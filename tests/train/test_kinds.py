"""The model-kind registry (train.kinds): the built-in kinds, and a third kind defined here in one place that
``python -m train``, ``python -m train.protocol``, checkpoints, folding and the fp32 tail all pick up."""
import json
from dataclasses import dataclass

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from icrt.export.fold import count_constants, count_parameters, fold_for_export
from icrt.export.fp16 import convert_fp16, tail_nodes
from icrt.runtime.bundle.preprocessing import Preprocessing
from icrt.train.kinds import (
    ModelKind,
    UnknownKindError,
    get_kind,
    is_kind,
    kind_names,
    register_kind,
    tail_names,
    unregister_kind,
)
from icrt.train.kinds.common import positive_int, run_options
from icrt.train.trainer import RunConfig, Trainer, load_splits
from tests import tiny
from tests.tiny import DictConfig

# --- a toy kind: global average pool + linear + sigmoid, declared in one place ------------------------------------


@dataclass
class ToyConfig(DictConfig):
    width: int = 4
    image_size: int = 32


class Toy(nn.Module):
    """conv stem -> global average pool -> linear ``readout`` -> sigmoid; ``aux`` is a training-only head."""

    def __init__(self, cfg: ToyConfig, load_pretrained: bool = True):
        super().__init__()
        self.stem = nn.Conv2d(3, cfg.width, 3, padding=1)
        self.readout = nn.Linear(cfg.width, 1)
        self.aux = nn.Linear(cfg.width, 3)

    def forward(self, x):
        f = torch.relu(self.stem(x)).mean(dim=(2, 3))
        return torch.sigmoid(self.readout(f)).squeeze(-1)


class ToyScorer(nn.Module):
    """The folded toy: the same image path without ``aux``."""

    def __init__(self, model: Toy):
        super().__init__()
        self.stem, self.readout = model.stem, model.readout

    forward = Toy.forward


@dataclass
class ToyTrainConfig(RunConfig):
    out: str = "runs/toy"


class ToyTrainer(Trainer):
    kind = "toy"
    config_class = ToyTrainConfig

    def __init__(self, cfg: ToyTrainConfig, samples=None):
        super().__init__(cfg)
        self.model_cfg = ToyConfig.from_dict(cfg.model)
        self.prep = Preprocessing.from_dict({"resize": "square", "size": self.model_cfg.image_size})
        self.train_samples, self.val_samples = load_splits(cfg, need_captions=False, samples=samples)
        self.model = Toy(self.model_cfg).to(self.device)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=cfg.lr)
        self.build_data()

    def train_step(self, x, y, idx) -> dict:
        x, y = x.to(self.device), y.to(self.device)
        self.model.train()
        loss = self.regression_loss(self.model(x), y, idx)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return {"loss": loss.item()}


def _toy_arguments(p):
    p.add_argument_group("model").add_argument("--width", type=positive_int, default=4, help="stem channels")


def _toy_train_config(args):
    return dict(**run_options(args), model={"width": args.width, "image_size": args.image_size})


TOY = ModelKind(
    name="toy", config=ToyConfig, model=Toy, trainer=ToyTrainer, train_config=_toy_train_config,
    add_arguments=_toy_arguments, defaults={"image_size": 32, "epochs": 1, "batch_size": 8},
    help="toy: average pool + linear", fold=ToyScorer, tail=("readout",),
)


@pytest.fixture
def toy():
    register_kind(TOY)
    yield TOY
    if is_kind("toy"):
        unregister_kind("toy")


def _help(argv):
    from icrt.train.cli import main

    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 0
    return e


# --- the built-in kinds -------------------------------------------------------------------------------------------


def test_builtin_kinds_are_registered_with_their_fp32_tails():
    from icrt.train.cmssa_trainer import CMSSATrainer
    from icrt.train.d2s_trainer import D2STrainer
    from icrt.train.models.cmssa import CMSSA, CMSSAConfig
    from icrt.train.models.d2s import D2S, D2SConfig

    assert kind_names()[:2] == ["d2s", "cmssa"]
    d2s, cmssa = get_kind("d2s"), get_kind("cmssa")
    assert (d2s.config, d2s.model, d2s.trainer_class()) == (D2SConfig, D2S, D2STrainer)
    assert (cmssa.config, cmssa.model, cmssa.trainer_class()) == (CMSSAConfig, CMSSA, CMSSATrainer)
    assert d2s.tail == ("head", "cues", "stats", "colours") and cmssa.tail == ()  # CM-SSA's tail: LevelScorer's top level
    assert tail_names() == ("head", "cues", "stats", "colours") and tail_names("cmssa") == ()
    assert cmssa.defaults == {"epochs": 50, "batch_size": 64, "lr": 1e-4, "resize": "patches", "image_size": None}


def test_d2s_tail_names_are_submodules_of_the_folded_model():
    from icrt.train.models import create_model

    model = create_model("d2s", tiny.d2s(cues=True, colours=(3,), head_hidden=8, pool="stats"), load_pretrained=False)
    folded = fold_for_export(model, "d2s")
    assert folded is model and not folded.training
    assert set(get_kind("d2s").tail) <= {name for name, _ in folded.named_children()}


def test_unknown_kind_is_a_user_error_naming_the_known_ones():
    from icrt.train.models import create_model

    for call in (lambda: get_kind("mystery"), lambda: create_model("mystery", {})):
        with pytest.raises(UnknownKindError, match=r"unknown model kind 'mystery'; known: d2s, cmssa") as e:
            call()
        assert isinstance(e.value, ValueError)


def test_registration_is_checked():
    with pytest.raises(ValueError, match="already registered"):
        register_kind(ModelKind("d2s", config=ToyConfig, model=Toy))
    with pytest.raises(ValueError, match="model kind name"):
        ModelKind("Not A Name", config=ToyConfig, model=Toy)
    with pytest.raises(ValueError, match="tail must be a tuple"):
        ModelKind("toy", config=ToyConfig, model=Toy, tail="readout")
    with pytest.raises(UnknownKindError):
        unregister_kind("mystery")
    assert get_kind("d2s").model.__name__ == "D2S"  # the refused registration changed nothing


# --- a third kind, registered here -------------------------------------------------------------------------------


def test_new_kind_is_a_train_subcommand_with_its_options_and_defaults(toy, labels_csv, capsys):
    from icrt.train.cli import build_parser, train_config, trainer_for

    _help(["--help"])
    out = capsys.readouterr().out
    assert "{d2s,cmssa,toy}" in out and "toy: average pool + linear" in out
    _help(["toy", "--help"])
    out = capsys.readouterr().out
    assert "--width WIDTH" in out and "stem channels (default: 4)" in out and "--scene-sampling K" in out
    assert "--backbone" not in out  # d2s / cmssa options stay theirs
    args = build_parser().parse_args(["toy", "--data", labels_csv, "--out", "o", "--width", "6", "--device", "cpu"])
    cfg = train_config(args)
    assert isinstance(cfg, ToyTrainConfig) and cfg.model == {"width": 6, "image_size": 32}
    assert (cfg.epochs, cfg.batch_size, cfg.lr) == (1, 8, 1e-3)  # the kind's defaults, then the common ones
    tr = trainer_for(args)
    assert isinstance(tr, ToyTrainer) and tr.cfg is not cfg and tr.cfg == cfg


def test_new_kind_trains_from_the_cli_and_its_checkpoint_loads(toy, labels_csv, tmp_path, capsys):
    from icrt.train.checkpoint import load_checkpoint, model_from_checkpoint
    from icrt.train.cli import main

    out = tmp_path / "run"
    assert main(["toy", "--data", labels_csv, "--out", str(out), "--device", "cpu", "--width", "5"]) == 0
    err = capsys.readouterr().err
    assert "train 26 images, validate 6; 1 epochs x 3 steps on cpu" in err and "best epoch 1" in err
    ckpt = load_checkpoint(str(out / "checkpoint.pt"))
    assert ckpt["kind"] == "toy" and ckpt["config"] == {"width": 5, "image_size": 32}
    model = model_from_checkpoint(ckpt)
    assert isinstance(model, Toy) and model.stem.out_channels == 5
    assert json.loads((out / "config.json").read_text())["model"] == {"width": 5, "image_size": 32}
    # a user error of the new kind's run is one line with its subcommand as the program name
    assert main(["toy", "--data", str(tmp_path / "none.csv"), "--out", str(out), "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"python -m icrt.train toy: error: {tmp_path / 'none.csv'}"), err


def test_new_kind_is_a_protocol_choice_and_runs_in_a_protocol(toy, labels_csv, tmp_path, capsys):
    from icrt.train.protocol import build_parser, check_models, main

    assert '"d2s|cmssa|toy [train options]"' in " ".join(build_parser().format_help().split())
    check_models(["toy --width 3"])
    with pytest.raises(ValueError, match="start with d2s, cmssa or toy and leave"):
        check_models(["mystery --width 3"])
    out = tmp_path / "rs"
    model = "toy --width 3 --device cpu"
    assert main(["random-split", "--data", labels_csv, "--out", str(out), "--model", model, "--seeds", "42"]) == 0
    res = json.loads((out / "results.json").read_text())
    (r,) = res["runs"]
    assert (r["model"], r["setting"], r["seed"], r["n_train"] + r["n_test"]) == (model, "8:2", 42, 32)
    assert 0 < r["n_test"] < 10 and np.isfinite(r["metrics"]["srcc"])
    err = capsys.readouterr().err
    assert f"[{model}] 8:2 seed 42: train {r['n_train']} test {r['n_test']}" in err and "wrote " in err
    # the trainer's progress lines are quieted by its loggers' level inside a protocol (tqdm bars are not logs)
    assert "images, validate" not in err and "best epoch" not in err
    assert main(["random-split", "--data", labels_csv, "--out", str(out), "--model", "mystery"]) == 2
    assert capsys.readouterr().err.startswith("python -m train.protocol: error: --model 'mystery': start with")


def test_new_kind_folds_through_its_registered_function(toy):
    torch.manual_seed(0)
    model = Toy(ToyConfig()).eval()
    folded = fold_for_export(model, "toy")
    assert isinstance(folded, ToyScorer) and not folded.training
    assert count_parameters(folded) == count_parameters(model) - (4 * 3 + 3)  # aux dropped
    assert count_constants(folded) == 0
    x = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), model(x), rtol=0, atol=0)
    # without the registration, the kind is unknown to folding
    unregister_kind("toy")
    with pytest.raises(ValueError, match="no folding for model kind 'toy'"):
        fold_for_export(model, "toy")


def test_new_kind_tail_stays_fp32_and_leaves_the_registry_clean(toy, tmp_path):
    from icrt.export.onnx_export import export_onnx

    torch.manual_seed(0)
    folded = fold_for_export(Toy(ToyConfig(width=8)).eval(), "toy")
    # a readout whose intermediate (the product, ~1e5) is past fp16's range while its sum is not: only a tail
    # that stays fp32 end to end (no fp16 round trip between its nodes) scores it right
    with torch.no_grad():
        folded.readout.weight.mul_(1e5 / folded.readout.weight.abs().sum())
        f = torch.relu(folded.stem(torch.rand(16, 3, 32, 32))).mean(dim=(2, 3))
        folded.readout.bias.copy_(-(f @ folded.readout.weight.T).mean())
    path = str(tmp_path / "toy.onnx")
    export_onnx(folded, path, 32)
    graph = onnx.load(path)
    stem = [n.name for n in graph.graph.node if n.name.startswith("/stem/")]
    readout = [n.name for n in graph.graph.node if n.name.startswith("/readout/")]
    assert stem and readout
    tail = tail_nodes(graph, kind="toy")
    assert set(readout) <= set(tail) and not set(stem) & set(tail)
    assert set(tail) == {n.name for n in graph.graph.node if n.name} - set(stem)  # + the top-level ops
    assert set(readout) <= set(tail_nodes(graph))  # the default: every registered kind's tail
    assert not set(readout) & set(tail_nodes(graph, kind="d2s"))
    # fp16: the stem's weights become fp16, the readout's stay fp32
    info = convert_fp16(path, str(tmp_path / "toy.fp16.onnx"), kind="toy")
    assert info["fp32_tail_nodes"] == len(tail)
    m16 = onnx.load(str(tmp_path / "toy.fp16.onnx"))
    types = {i.name: i.data_type for i in m16.graph.initializer}
    assert types["stem.weight"] == onnx.TensorProto.FLOAT16 and types["readout.weight"] == onnx.TensorProto.FLOAT
    import onnxruntime as ort

    x = np.random.default_rng(0).random((2, 3, 32, 32), dtype=np.float32)
    a, b = (ort.InferenceSession(p, providers=["CPUExecutionProvider"]).run(None, {"image": x})[0]
            for p in (path, str(tmp_path / "toy.fp16.onnx")))
    with torch.no_grad():
        np.testing.assert_allclose(a, folded(torch.from_numpy(x)).numpy(), atol=1e-6)
    np.testing.assert_allclose(a, b, atol=5e-3)
    assert np.ptp(a) > 0.1  # the scores are not all saturated: the test above means something
    producers = {o: n for n in m16.graph.node for o in n.output}
    assert not [n.name for n in m16.graph.node if n.op_type == "Cast" and
                getattr(producers.get(n.input[0]), "op_type", None) == "Cast"]  # no Cast -> Cast round trips
    # unregistered: gone from the CLI, the tails and the model builder
    unregister_kind("toy")
    from icrt.train.cli import build_parser
    from icrt.train.models import create_model

    assert "toy" not in build_parser().format_help() and "toy" not in kind_names()
    assert tail_names() == ("head", "cues", "stats", "colours") and not set(readout) & set(tail_nodes(graph))
    with pytest.raises(UnknownKindError):
        create_model("toy", {})
