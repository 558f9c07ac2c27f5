"""D2S training loop (paper Sec. 3, Algorithm 1, Appendix A.3).

L = L_mse + lambda * L_eal + gamma * L_fal (lambda = 5, gamma = 0.01), Adam (weight decay 1e-3),
lr 1e-3 with cosine annealing to 2.5e-6 per iteration, batch 32, input 512.

Text features come from the frozen OpenCLIP text teacher; they are computed once per caption before
training (the teacher is frozen, so this is exact and saves a forward per step). One linear projection
W_v maps the visual feature to the text dimension (W_s = identity). Entropies (Eq. 12) are taken of the
projected visual feature, so that visual and text entropies live on the same log(D) scale.
"""
from __future__ import annotations

import copy
import math
import os
import random
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from runtime.files import write_json
from runtime.preprocess import Preprocessing

from . import metrics
from .checkpoint import FORMAT, atomic_torch_save
from .data import DataError, Sample, attach_captions, is_ic9600, load_samples, read_captions, split_train_val
from .dataset import GeometryCache, ImageScoreDataset
from .evaluate import evaluate
from .losses import EntropyBuffers, eal_loss, feature_entropy, info_nce
from .models.d2s import D2S, D2SConfig


@dataclass
class D2STrainConfig:
    data: str = ""
    val_data: str | None = None
    out: str = "runs/d2s"
    captions: str | None = None
    text: str = "clip"  # clip | none
    text_encoder: str = "ViT-B-16"
    text_pretrained: str = "openai"
    epochs: int = 20
    batch_size: int = 32
    lr: float = 1e-3
    min_lr: float = 2.5e-6
    weight_decay: float = 1e-3
    eal_weight: float = 5.0  # lambda
    fal_weight: float = 0.01  # gamma
    temperature: float = 0.07
    buffer_size: int = 2048  # M
    momentum: float = 0.995
    refresh_step: int = 50  # buffer refreshed fully every refresh_step iterations (~M/refresh_step per step)
    val_fraction: float = 0.2
    seed: int = 42
    device: str = "auto"
    workers: int = 0
    cache: str = "auto"  # auto | on | off
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


def load_splits(cfg: D2STrainConfig) -> tuple[list[Sample], list[Sample]]:
    train = load_samples(cfg.data, "train")
    if cfg.val_data:
        val = load_samples(cfg.val_data, "test" if is_ic9600(cfg.val_data) else "train")
    elif cfg.val_fraction > 0:
        train, val = split_train_val(train, cfg.val_fraction, cfg.seed, stratify=True)
    else:  # train on everything; the last epoch is kept (an epoch count chosen beforehand)
        val = []
    if cfg.text != "none":
        if cfg.captions:
            caps = read_captions(cfg.captions)
            train = attach_captions(train, caps, cfg.captions)
        elif any(s.caption is None for s in train):
            raise DataError(f"{cfg.data}: no captions for the text teacher; pass --captions FILE or --text none")
    return train, val


class D2STrainer:
    def __init__(self, cfg: D2STrainConfig, log=print):
        self.cfg, self.log = cfg, log
        self.device = resolve_device(cfg.device)
        seed_everything(cfg.seed)
        self.model_cfg = D2SConfig.from_dict(cfg.model)
        prep = {"resize": "square", "size": self.model_cfg.image_size, "mean": self.model_cfg.mean,
                "std": self.model_cfg.std}
        prep.update(cfg.preprocessing)
        self.prep = Preprocessing.from_dict(prep)
        self.train_samples, self.val_samples = load_splits(cfg)
        self.model = D2S(self.model_cfg).to(self.device)
        self.use_text = cfg.text != "none"
        self.proj = None
        if self.use_text:
            self._encode_captions()
            self.proj = nn.Linear(self.model.feature_dim, self.text_feats.shape[1]).to(self.device)
            self.momentum_model = copy.deepcopy(nn.ModuleDict({"model": self.model, "proj": self.proj}))
            self.momentum_model.requires_grad_(False).eval()
            self.buffers = EntropyBuffers(cfg.buffer_size)
        params = list(self.model.parameters()) + (list(self.proj.parameters()) if self.proj else [])
        self.optimizer = torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        side = self.prep.size if self.prep.resize == "square" else max(self.prep.size, self.prep.max_long_side or 1024)
        cache_on = cfg.cache == "on" or (cfg.cache == "auto" and cfg.workers == 0 and
                                          (len(self.train_samples) + len(self.val_samples)) * 3 * side ** 2 < 2 << 30)
        self.train_cache = GeometryCache(self.prep, enabled=cache_on)
        self.val_cache = GeometryCache(self.prep, enabled=cache_on)
        self.train_set = ImageScoreDataset(self.train_samples, self.prep, train=True, cache=self.train_cache)
        self.eval_set = ImageScoreDataset(self.train_samples, self.prep, train=False, cache=self.train_cache)
        g = torch.Generator().manual_seed(cfg.seed)
        self.loader = DataLoader(self.train_set, batch_size=cfg.batch_size, shuffle=True, drop_last=len(self.train_set) > cfg.batch_size,
                                 num_workers=cfg.workers, generator=g, persistent_workers=cfg.workers > 0)
        self.steps_per_epoch = len(self.loader)
        self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
            self.optimizer, T_max=max(1, cfg.epochs * self.steps_per_epoch), eta_min=cfg.min_lr)
        self.epoch, self.best_srcc, self.best_epoch, self.history = 0, -math.inf, -1, []

    # --- text ---------------------------------------------------------------------------------
    def _encode_captions(self) -> None:
        from .text import TextTeacher

        t0 = time.time()
        teacher = TextTeacher(self.cfg.text_encoder, self.cfg.text_pretrained).to(self.device)
        self.text_feats = teacher.encode_all([s.caption for s in self.train_samples], device=self.device)
        self.text_entropy = feature_entropy(self.text_feats)
        del teacher
        self.log(f"encoded {len(self.train_samples)} captions with {self.cfg.text_encoder} "
                 f"({self.text_feats.shape[1]}-d) in {time.time() - t0:.1f}s")

    # --- one step (Algorithm 1) -----------------------------------------------------------------
    def _momentum_entropy(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            mm = self.momentum_model
            return feature_entropy(mm["proj"](mm["model"].features(x)))

    def _momentum_update(self) -> None:
        m = self.cfg.momentum
        with torch.no_grad():
            live = list(self.model.parameters()) + list(self.proj.parameters())
            mom = list(self.momentum_model["model"].parameters()) + list(self.momentum_model["proj"].parameters())
            for q, p in zip(mom, live):
                q.mul_(m).add_(p.detach(), alpha=1 - m)
            for qb, pb in zip(self.momentum_model["model"].buffers(), self.model.buffers()):
                qb.copy_(pb)

    def _refresh(self) -> None:
        r = math.ceil(self.cfg.buffer_size / self.cfg.refresh_step) if self.cfg.refresh_step > 0 else 0
        slots, idx = self.buffers.refresh_slots(r)
        if len(idx) == 0:
            return
        x = torch.stack([self.eval_set[int(i)][0] for i in idx]).to(self.device)
        self.buffers.update(slots, self._momentum_entropy(x))

    def train_step(self, x, y, idx) -> dict:
        x, y = x.to(self.device), y.to(self.device)
        self.model.train()
        terms = {}
        if self.use_text:
            # Algorithm 1: the momentum model's entropies of this batch enter the FIFO buffers first.
            self.buffers.push(self._momentum_entropy(x), self.text_entropy[idx], idx)
        z = self.model.features(x)
        score = self.model.score_from_features(z)
        loss = F.mse_loss(score, y)
        terms["mse"] = loss.item()
        if self.use_text:
            zt = self.text_feats[idx].to(self.device)
            zv = self.proj(z)
            l_fal = info_nce(zv, zt, self.cfg.temperature)
            l_eal = eal_loss(self.buffers, feature_entropy(zv), self.text_entropy[idx].to(self.device))
            loss = loss + self.cfg.eal_weight * l_eal + self.cfg.fal_weight * l_fal
            terms["fal"], terms["eal"] = l_fal.item(), l_eal.item()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.scheduler.step()
        if self.use_text:
            self._momentum_update()
            self._refresh()
        terms["loss"] = loss.item()
        return terms

    # --- epochs ---------------------------------------------------------------------------------
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

    def validate(self) -> dict:
        if not self.val_samples:
            return {"n": 0, "srcc": float("nan")}
        rep, _ = evaluate(self.model, self.val_samples, self.prep, self.device, self.cfg.batch_size, self.val_cache)
        return rep

    def fit(self) -> dict:
        os.makedirs(self.cfg.out, exist_ok=True)
        write_json(os.path.join(self.cfg.out, "config.json"), self.config_dict())
        self.log(f"train {len(self.train_samples)} images, validate {len(self.val_samples)}; "
                 f"{self.cfg.epochs} epochs x {self.steps_per_epoch} steps on {self.device}")
        best = None
        while self.epoch < self.cfg.epochs:
            t0 = time.time()
            losses = self.train_epoch()
            val = self.validate()
            self.epoch += 1
            record = {"epoch": self.epoch, "seconds": round(time.time() - t0, 1), "lr": self.scheduler.get_last_lr()[0],
                      **{f"loss_{k}": v for k, v in losses.items()}, "val": val}
            self.history.append(record)
            loss_txt = "  ".join(f"{k} {v:.4f}" for k, v in losses.items())
            val_txt = metrics.format_line(val) if self.val_samples else "none (training on all data)"
            self.log(f"epoch {self.epoch}/{self.cfg.epochs} [{record['seconds']}s]  {loss_txt}  | val {val_txt}")
            srcc = val["srcc"] if math.isfinite(val["srcc"]) else -1.0
            if srcc > self.best_srcc or not self.val_samples:
                self.best_srcc, self.best_epoch = srcc, self.epoch
                self.save_checkpoint(os.path.join(self.cfg.out, "checkpoint.pt"), val)
                best = {"epoch": self.epoch, **val}
                write_json(os.path.join(self.cfg.out, "metrics.json"), best)
            self.save_state(os.path.join(self.cfg.out, "last.pt"))
        if best is None:  # resumed after the last epoch
            import json
            with open(os.path.join(self.cfg.out, "metrics.json")) as f:
                best = json.load(f)
        self.log(f"best epoch {self.best_epoch}: val SRCC {self.best_srcc:.4f}; checkpoint {os.path.join(self.cfg.out, 'checkpoint.pt')}")
        return best

    # --- persistence ----------------------------------------------------------------------------
    def config_dict(self) -> dict:
        d = asdict(self.cfg)
        d["model"], d["preprocessing"] = self.model_cfg.to_dict(), self.prep.to_dict()
        return d

    def save_checkpoint(self, path: str, val: dict) -> None:
        atomic_torch_save({
            "format": FORMAT, "kind": "d2s", "config": self.model_cfg.to_dict(), "preprocessing": self.prep.to_dict(),
            "model": self.model.state_dict(), "projection": self.proj.state_dict() if self.proj else None,
            "epoch": self.epoch, "val_metrics": val, "train_config": self.config_dict(),
            "score": {"range": [0.0, 1.0], "meaning": "higher = more complex"},
        }, path)

    def save_state(self, path: str) -> None:
        state = {
            "format": FORMAT + "+state", "epoch": self.epoch, "best_srcc": self.best_srcc, "best_epoch": self.best_epoch,
            "history": self.history, "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(), "config": self.config_dict(),
            "rng": {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate(),
                    "loader": self.loader.generator.get_state()},
        }
        if self.use_text:
            state.update(proj=self.proj.state_dict(), momentum=self.momentum_model.state_dict(),
                         buffers=self.buffers.state_dict())
        atomic_torch_save(state, path)

    def load_state(self, path: str) -> None:
        s = torch.load(path, map_location="cpu", weights_only=False)
        self.model.load_state_dict(s["model"])
        self.optimizer.load_state_dict(s["optimizer"])
        self.scheduler.load_state_dict(s["scheduler"])
        self.epoch, self.best_srcc, self.best_epoch, self.history = s["epoch"], s["best_srcc"], s["best_epoch"], s["history"]
        if self.use_text:
            self.proj.load_state_dict(s["proj"])
            self.momentum_model.load_state_dict(s["momentum"])
            self.buffers.load_state_dict(s["buffers"])
        torch.set_rng_state(s["rng"]["torch"])
        np.random.set_state(s["rng"]["numpy"])
        random.setstate(s["rng"]["python"])
        self.loader.generator.set_state(s["rng"]["loader"])
        self.log(f"resumed from {path} after epoch {self.epoch} (best SRCC {self.best_srcc:.4f} at epoch {self.best_epoch})")
