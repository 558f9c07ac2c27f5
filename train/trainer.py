"""The training machinery shared by every model kind (D2S, CM-SSA).

A subclass builds its model, optimizer (and optional per-step scheduler) and defines ``train_step``;
this base gives it: data splits and loaders over the runtime's preprocessing, the epoch loop with a
progress bar of the loss terms, per-epoch validation with the runtime's patch / square evaluation,
the best checkpoint by validation SRCC (``checkpoint.pt``, ``metrics.json``), ``config.json``,
``last.pt`` after every epoch and ``--resume`` from it, and optional early stopping.

Hooks a subclass may override: ``checkpoint_extra`` (more entries in checkpoint.pt),
``model_state`` / ``load_model_state`` (what of the model goes into last.pt), ``extra_state`` /
``load_extra_state`` (its own resumable state), ``current_lr``.

Progress lines go to the ``train.trainer`` logger (INFO): a caller quiets them by that logger's level.
"""
from __future__ import annotations

import json
import logging
import math
import os
import random
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch.utils.data import DataLoader

import icrt.train.metrics as metrics
from icrt.runtime.base.files import write_json
from icrt.runtime.bundle.manifest import DEFAULT_SCORE
from icrt.train.checkpoint import FORMAT, CheckpointError, atomic_torch_save, brief, safe_load
from icrt.train.data import (
    DataError,
    Sample,
    attach_captions,
    check_training_samples,
    data_paths,
    is_ic9600,
    load_many,
    read_captions,
    refuse_overlap,
    split_train_val,
)
from icrt.train.dataset import GeometryCache, ImageScoreDataset
from icrt.train.evaluate import evaluate
from icrt.train.scene import SceneBatchSampler, regression_loss

logger = logging.getLogger(__name__)

@dataclass
class RunConfig:
    """Options every trainer shares (the CLI's common arguments); model kinds subclass it."""
    data: str = ""
    val_data: str | None = None
    out: str = "runs/run"
    captions: str | None = None
    epochs: int = 20
    batch_size: int = 32
    lr: float = 1e-3
    val_fraction: float = 0.2
    seed: int = 42
    device: str = "auto"
    workers: int = 0
    cache: str = "auto"  # auto | on | off
    scene_sampling: int = 0  # SIND: K scenes per batch (0: plain shuffled batches)
    loss: str = "mse"  # mse | l1 | scale-shift (per-scene aligned MSE, train.scene)
    dataset_domain: bool = False  # the data set, not the category, is the scene
    score_range: tuple = (0.0, 1.0)  # scores outside are refused (train.data.check_scores)
    skip_bad_images: bool = False  # leave out images that do not decode (else refuse them)
    model: dict = field(default_factory=dict)
    preprocessing: dict = field(default_factory=dict)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def load_splits(cfg, need_captions: bool, samples: list[Sample] | None = None) -> tuple[list[Sample], list[Sample]]:
    """Train / validation samples from ``cfg.data`` (one or several data sets; or ``samples`` when given,
    as the protocols do) + ``val_data`` or a seeded stratified split; captions joined to the training
    samples when ``need_captions``. Before splitting, the samples are checked (scores in
    ``cfg.score_range``, repeated images, every image decodes: ``train.data.check_training_samples``), so a
    repeat can never land on both sides of the split; a ``val_data`` image that is also a training image
    is refused."""
    rng, skip = getattr(cfg, "score_range", (0.0, 1.0)), getattr(cfg, "skip_bad_images", False)
    train = list(samples) if samples is not None else load_many(cfg.data, "train")
    train = check_training_samples(train, rng, skip)
    if cfg.val_data:
        val = load_many(cfg.val_data, "test" if all(is_ic9600(p) for p in data_paths(cfg.val_data)) else "train")
        val = check_training_samples(val, rng, skip)
        refuse_overlap(train, val)
    elif cfg.val_fraction > 0:
        train, val = split_train_val(train, cfg.val_fraction, cfg.seed, stratify=True)
    else:  # train on everything; the last epoch is kept (an epoch count chosen beforehand)
        val = []
    if need_captions:
        if cfg.captions:
            caps = read_captions(cfg.captions)
            train = attach_captions(train, caps, cfg.captions)
        elif any(s.caption is None for s in train):
            raise DataError(f"{cfg.data}: no captions for the text branch; pass --captions FILE"
                            + (" or --text none" if hasattr(cfg, "text") else ""))
    return train, val


class Trainer:
    """Base trainer. Subclasses set ``kind`` (the name their ``train.kinds.ModelKind`` registers),
    ``config_class`` (their :class:`RunConfig` subclass, which the kind's ``train_config`` fields fill) and, in
    ``__init__(cfg, samples=None)``, call ``super().__init__(cfg)`` first, then set ``model_cfg``, ``prep``,
    ``model``, ``optimizer`` (``scheduler`` optional, stepped per iteration by the subclass), load samples
    (``self.train_samples, self.val_samples``) and call ``build_data()``."""

    kind = ""
    config_class = RunConfig

    def __init__(self, cfg):
        self.cfg = cfg
        self.device = resolve_device(cfg.device)
        seed_everything(cfg.seed)
        self.scheduler = None
        self.epoch, self.best_srcc, self.best_epoch, self.history = 0, -math.inf, -1, []

    # --- data -----------------------------------------------------------------------------------
    def build_data(self) -> None:
        cfg = self.cfg
        side = self.prep.size if self.prep.resize == "square" else max(self.prep.size, self.prep.max_long_side or 1024)
        cache_on = cfg.cache == "on" or (cfg.cache == "auto" and cfg.workers == 0 and
                                          (len(self.train_samples) + len(self.val_samples)) * 3 * side ** 2 < 2 << 30)
        self.train_cache = GeometryCache(self.prep, enabled=cache_on)
        self.val_cache = GeometryCache(self.prep, enabled=cache_on)
        self.train_set = ImageScoreDataset(self.train_samples, self.prep, train=True, cache=self.train_cache)
        self.eval_set = ImageScoreDataset(self.train_samples, self.prep, train=False, cache=self.train_cache)
        g = torch.Generator().manual_seed(cfg.seed)
        self.domains = [self.domain(s) for s in self.train_samples]
        k = int(getattr(cfg, "scene_sampling", 0) or 0)
        if k > 0:  # SIND scene sampling: K scenes x batch/K images per batch
            sampler = SceneBatchSampler(self.domains, cfg.batch_size, k, generator=g)
            self.loader = DataLoader(self.train_set, batch_sampler=sampler, num_workers=cfg.workers,
                                     generator=g, persistent_workers=cfg.workers > 0)
        else:
            self.loader = DataLoader(self.train_set, batch_size=cfg.batch_size, shuffle=True,
                                     drop_last=len(self.train_set) > cfg.batch_size, num_workers=cfg.workers,
                                     generator=g, persistent_workers=cfg.workers > 0)
        self.steps_per_epoch = len(self.loader)

    def domain(self, s: Sample) -> str:
        """An image's scene: its data set under ``--dataset-domain``, else its category."""
        if getattr(self.cfg, "dataset_domain", False):
            return s.source
        return "" if s.category is None else s.category

    def regression_loss(self, score: torch.Tensor, y: torch.Tensor, idx) -> torch.Tensor:
        """The score loss chosen by ``--loss`` (mse, l1, or scale-shift within each scene of the batch)."""
        name = getattr(self.cfg, "loss", "mse") or "mse"
        domains = [self.domains[int(i)] for i in idx] if name == "scale-shift" else None
        return regression_loss(name, score, y, domains)

    # --- one step / epoch -----------------------------------------------------------------------
    def train_step(self, x, y, idx) -> dict:  # pragma: no cover - abstract
        raise NotImplementedError

    def train_epoch(self) -> dict:
        from tqdm import tqdm

        sums, n = {}, 0
        bar = tqdm(self.loader, desc=f"epoch {self.epoch + 1}/{self.cfg.epochs}", leave=False, dynamic_ncols=True)
        for x, y, idx in bar:
            terms = self.train_step(x, y, idx)
            n += 1
            for k, v in terms.items():
                sums[k] = sums.get(k, 0.0) + v
            bar.set_postfix({k: f"{v / n:.4f}" for k, v in sums.items()})
        return {k: v / max(n, 1) for k, v in sums.items()}

    def eval_model(self):
        """The image -> score module that validation scores (the model itself by default)."""
        return self.model

    def validate(self) -> dict:
        if not self.val_samples:
            return {"n": 0, "srcc": float("nan")}
        rep, _ = evaluate(self.eval_model(), self.val_samples, self.prep, self.device, self.cfg.batch_size, self.val_cache)
        return rep

    def current_lr(self) -> float:
        if self.scheduler is not None:
            return self.scheduler.get_last_lr()[0]
        return self.optimizer.param_groups[0]["lr"]

    def fit(self) -> dict:
        os.makedirs(self.cfg.out, exist_ok=True)
        write_json(os.path.join(self.cfg.out, "config.json"), self.config_dict())
        patience = int(getattr(self.cfg, "early_stop", 0) or 0)
        logger.info(f"train {len(self.train_samples)} images, validate {len(self.val_samples)}; "
                    f"{self.cfg.epochs} epochs x {self.steps_per_epoch} steps on {self.device}"
                    + (f"; early stop after {patience} epochs without gain" if patience and self.val_samples else ""))
        best = None
        while self.epoch < self.cfg.epochs:
            if patience and self.val_samples and self.epoch - self.best_epoch >= patience and self.best_epoch > 0:
                logger.info(f"early stop: no SRCC gain for {self.epoch - self.best_epoch} epochs")
                break
            t0 = time.time()
            losses = self.train_epoch()
            val = self.validate()
            self.epoch += 1
            record = {"epoch": self.epoch, "seconds": round(time.time() - t0, 1), "lr": self.current_lr(),
                      **{f"loss_{k}": v for k, v in losses.items()}, "val": val}
            self.history.append(record)
            loss_txt = "  ".join(f"{k} {v:.4f}" for k, v in losses.items())
            val_txt = metrics.format_line(val) if self.val_samples else "none (training on all data)"
            logger.info(f"epoch {self.epoch}/{self.cfg.epochs} [{record['seconds']}s]  {loss_txt}  | val {val_txt}")
            srcc = val["srcc"] if math.isfinite(val["srcc"]) else -1.0
            if srcc > self.best_srcc or not self.val_samples:
                self.best_srcc, self.best_epoch = srcc, self.epoch
                self.save_checkpoint(os.path.join(self.cfg.out, "checkpoint.pt"), val)
                best = {"epoch": self.epoch, **val}
                write_json(os.path.join(self.cfg.out, "metrics.json"), best)
            self.save_state(os.path.join(self.cfg.out, "last.pt"))
        if best is None:  # resumed after the last epoch (or stopped early right after resuming)
            with open(os.path.join(self.cfg.out, "metrics.json")) as f:
                best = json.load(f)
        logger.info(f"best epoch {self.best_epoch}: val SRCC {self.best_srcc:.4f}; "
                    f"checkpoint {os.path.join(self.cfg.out, 'checkpoint.pt')}")
        return best

    # --- persistence ----------------------------------------------------------------------------
    def config_dict(self) -> dict:
        d = asdict(self.cfg)
        d["model"], d["preprocessing"] = self.model_cfg.to_dict(), self.prep.to_dict()
        return d

    def checkpoint_extra(self) -> dict:
        return {}

    def save_checkpoint(self, path: str, val: dict) -> None:
        atomic_torch_save({
            "format": FORMAT, "kind": self.kind, "config": self.model_cfg.to_dict(), "preprocessing": self.prep.to_dict(),
            "model": self.model.state_dict(), **self.checkpoint_extra(),
            "epoch": self.epoch, "val_metrics": val, "train_config": self.config_dict(),
            "score": dict(DEFAULT_SCORE),
        }, path)

    def model_state(self) -> dict:
        return self.model.state_dict()

    def load_model_state(self, state: dict) -> None:
        self.model.load_state_dict(state)

    def extra_state(self) -> dict:
        return {}

    def load_extra_state(self, state: dict) -> None:
        pass

    def save_state(self, path: str) -> None:
        """``last.pt``: everything ``--resume`` needs, in types ``torch.load(weights_only=True)`` accepts
        (tensors, plain containers, numbers, strings), so that resuming never unpickles code."""
        state = {
            "format": FORMAT + "+state", "epoch": self.epoch, "best_srcc": self.best_srcc, "best_epoch": self.best_epoch,
            "history": self.history, "model": self.model_state(), "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "config": self.config_dict(),
            "rng": {"torch": torch.get_rng_state(), "numpy": numpy_rng_state(), "python": random.getstate(),
                    "loader": self.loader.generator.get_state()},
        }
        state.update(self.extra_state())
        atomic_torch_save(state, path)

    def load_state(self, path: str) -> None:
        """Resume from ``last.pt``; a file that is unsafe, corrupt or of another run is a one-line
        :class:`CheckpointError`."""
        s = safe_load(path, "training state", allow=_OLD_NUMPY_RNG)
        if not isinstance(s, dict) or s.get("format") != FORMAT + "+state":
            raise CheckpointError(f"{path}: not an icrt training state (format {FORMAT + '+state'!r} expected)")
        try:
            self.load_model_state(s["model"])
            self.optimizer.load_state_dict(s["optimizer"])
            if self.scheduler is not None:
                self.scheduler.load_state_dict(s["scheduler"])
            self.epoch, self.best_srcc, self.best_epoch = int(s["epoch"]), float(s["best_srcc"]), int(s["best_epoch"])
            self.history = list(s["history"])
            self.load_extra_state(s)
            rng = s["rng"]
            torch.set_rng_state(rng["torch"])
            set_numpy_rng_state(rng["numpy"])
            version, internal, gauss = rng["python"]
            random.setstate((version, tuple(internal), gauss))
            self.loader.generator.set_state(rng["loader"])
        except (KeyError, ValueError, TypeError, RuntimeError, IndexError, AttributeError) as e:
            raise CheckpointError(f"{path}: does not fit this run ({brief(e)})") from None
        logger.info(f"resumed from {path} after epoch {self.epoch} (best SRCC {self.best_srcc:.4f} at epoch {self.best_epoch})")


# last.pt files written before the numpy RNG state was stored as a tensor hold a uint32 numpy array; these
# globals rebuild a plain array (no code of the file's choosing), so such runs still resume.
try:
    from numpy._core.multiarray import _reconstruct
except ImportError:  # numpy < 2
    from numpy.core.multiarray import _reconstruct
_OLD_NUMPY_RNG = (np.dtype, type(np.dtype(np.uint32)), np.ndarray, _reconstruct)


def numpy_rng_state() -> dict:
    """``np.random.get_state()`` as a tensor and plain numbers."""
    name, key, pos, has_gauss, gauss = np.random.get_state()
    return {"name": name, "key": torch.from_numpy(key.astype(np.int64)), "pos": int(pos),
            "has_gauss": int(has_gauss), "cached_gaussian": float(gauss)}


def set_numpy_rng_state(state) -> None:
    if isinstance(state, dict):
        key = np.asarray(state["key"].numpy() if torch.is_tensor(state["key"]) else state["key"]).astype(np.uint32)
        state = (state["name"], key, int(state["pos"]), int(state["has_gauss"]), float(state["cached_gaussian"]))
    np.random.set_state(state)
