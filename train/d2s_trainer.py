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
import logging
import math
import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from icrt.runtime.bundle.preprocessing import Preprocessing
from icrt.train.data import DataError, Sample
from icrt.train.kernel import TARGETS
from icrt.train.kinds import register_trainer
from icrt.train.losses import EntropyBuffers, eal_loss, feature_entropy, info_nce
from icrt.train.models.d2s import D2S, D2SConfig
from icrt.train.trainer import RunConfig, Trainer
from icrt.train.trainer import load_splits as _load_splits

logger = logging.getLogger(__name__)

# --fit values that fit a head in closed form on the frozen backbone's features -> the head they fit
CLOSED_FORM_HEADS = {"ridge": "linear", "kernel": "kernel"}


@dataclass
class D2STrainConfig(RunConfig):
    out: str = "runs/d2s"
    text: str = "clip"  # clip | none
    text_encoder: str = "ViT-B-16"
    text_pretrained: str = "openai"
    min_lr: float = 2.5e-6
    weight_decay: float = 1e-3
    eal_weight: float = 5.0  # lambda
    fal_weight: float = 0.01  # gamma
    temperature: float = 0.07
    buffer_size: int = 2048  # M
    momentum: float = 0.995
    refresh_step: int = 50  # buffer refreshed fully every refresh_step iterations (~M/refresh_step per step)
    kernel_target: str = "score"  # --fit kernel: score | category (train.kernel.Targets)
    fit: str = "sgd"  # sgd (the paper's training) | ridge / kernel (frozen backbone, closed-form head: train.ridge,
    # train.kernel)
    freeze_backbone: bool = False  # sgd: keep the backbone (and its batch-norm statistics) fixed
    backbone_lr_scale: float | None = None  # backbone lr = lr x this; None: 0.1 with pretrained weights, else 1


def load_splits(cfg: D2STrainConfig, samples=None) -> tuple[list[Sample], list[Sample]]:
    return _load_splits(cfg, need_captions=cfg.text != "none", samples=samples)


class D2STrainer(Trainer):
    kind = "d2s"
    config_class = D2STrainConfig

    def __init__(self, cfg: D2STrainConfig, samples=None):
        super().__init__(cfg)
        from icrt.train.weights import preprocessing_for

        model = dict(cfg.model)
        if cfg.fit not in CLOSED_FORM_HEADS and cfg.fit != "sgd":
            raise DataError(f"--fit {cfg.fit!r}: expected sgd, {' or '.join(CLOSED_FORM_HEADS)}")
        if cfg.kernel_target not in TARGETS:
            raise DataError(f"--kernel-target {cfg.kernel_target!r}: expected {' or '.join(TARGETS)}")
        if cfg.fit in CLOSED_FORM_HEADS:
            if cfg.text != "none":
                raise DataError(f"--fit {cfg.fit} fits a head on frozen features: it takes no captions (use --text none)")
            model["head"] = CLOSED_FORM_HEADS[cfg.fit]
            cfg.epochs = 1
        # the backbone's weights decide the input normalisation (train.weights), unless given explicitly
        for k, v in preprocessing_for(model.get("backbone", D2SConfig.backbone), model.get("pretrained", "imagenet")).items():
            model.setdefault(k, v)
        self.model_cfg = D2SConfig.from_dict(model)
        prep = {"resize": "square", "size": self.model_cfg.image_size, "mean": self.model_cfg.mean,
                "std": self.model_cfg.std, "interpolation": self.model_cfg.interpolation}
        prep.update(cfg.preprocessing)
        self.prep = Preprocessing.from_dict(prep)
        self.train_samples, self.val_samples = load_splits(cfg, samples)
        self.model = D2S(self.model_cfg).to(self.device)
        self.frozen = cfg.fit in CLOSED_FORM_HEADS or cfg.freeze_backbone
        if self.frozen:
            self.model.backbone.requires_grad_(False)
        self.use_text = cfg.text != "none"
        self.proj = None
        if self.use_text:
            self._encode_captions()
            self.proj = nn.Linear(self.model.feature_dim, self.text_feats.shape[1]).to(self.device)
            self.momentum_model = copy.deepcopy(nn.ModuleDict({"model": self.model, "proj": self.proj}))
            self.momentum_model.requires_grad_(False).eval()
            self.buffers = EntropyBuffers(cfg.buffer_size)
        scale = cfg.backbone_lr_scale
        if scale is None:
            scale = 0.1 if self.model_cfg.pretrained not in (None, "", "none") else 1.0
        backbone = [p for p in self.model.backbone.parameters() if p.requires_grad]
        rest = [p for n, p in self.model.named_parameters() if not n.startswith("backbone.")]
        rest += list(self.proj.parameters()) if self.proj else []
        groups = [{"params": rest}] + ([{"params": backbone, "lr": cfg.lr * scale}] if backbone else [])
        self.optimizer = torch.optim.Adam(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.build_data()
        self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
            self.optimizer, T_max=max(1, cfg.epochs * self.steps_per_epoch), eta_min=cfg.min_lr)

    # --- text ---------------------------------------------------------------------------------
    def _encode_captions(self) -> None:
        from icrt.train.text import TextTeacher

        t0 = time.time()
        teacher = TextTeacher(self.cfg.text_encoder, self.cfg.text_pretrained).to(self.device)
        self.text_feats = teacher.encode_all([s.caption for s in self.train_samples], device=self.device)
        self.text_entropy = feature_entropy(self.text_feats)
        del teacher
        logger.info(f"encoded {len(self.train_samples)} captions with {self.cfg.text_encoder} "
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

    def train_epoch(self) -> dict:
        if self.cfg.fit == "ridge":
            return self.fit_ridge()
        if self.cfg.fit == "kernel":
            return self.fit_kernel()
        return super().train_epoch()

    @torch.no_grad()
    def _features(self, flip: bool) -> np.ndarray:
        from tqdm import tqdm

        self.model.eval()
        # channels-last runs EfficientNet's depthwise convolutions ~1.6x faster on CPU (same values)
        model = self.model.to(memory_format=torch.channels_last)
        out = []
        n, bs = len(self.eval_set), self.cfg.batch_size
        for i in tqdm(range(0, n, bs), desc="features" + (" (mirrored)" if flip else ""), leave=False):
            x = torch.stack([self.eval_set[j][0] for j in range(i, min(n, i + bs))]).to(self.device)
            x = (x.flip(3) if flip else x).contiguous(memory_format=torch.channels_last)
            out.append(model.features(x).double().cpu().numpy())
        self.model.to(memory_format=torch.contiguous_format)
        return np.concatenate(out)

    def fit_ridge(self) -> dict:
        """The linear head in closed form on the frozen features of the training images and their mirrors."""
        from icrt.train.ridge import fit_head

        t0 = time.time()
        x, xf = self._features(False), self._features(True)
        y = np.array([s.score for s in self.train_samples])
        r = fit_head(x, y, self.domains, x_flip=xf)
        norm, lin = self.model.head[0], self.model.head[1]
        norm.mean.copy_(torch.as_tensor(r["mean"], dtype=torch.float32))
        norm.std.copy_(torch.as_tensor(r["std"], dtype=torch.float32))
        lin.weight.data.copy_(torch.as_tensor(r["weight"], dtype=torch.float32).view(1, -1))
        lin.bias.data.fill_(r["bias"])
        cv = "  ".join(f"{c['alpha']:g}: {c['srcc']:.4f}" for c in r["cv"])
        logger.info(f"ridge head on {x.shape[1]} features of {len(y)} images (+ mirrors) in {time.time() - t0:.0f}s; "
                    f"5-fold CV SRCC by alpha  {cv}  -> alpha {r['alpha']:g}")
        return {"ridge_alpha": float(r["alpha"]), "ridge_cv_srcc": float(r["cv_srcc"])}

    def fit_kernel(self) -> dict:
        """The RBF kernel head in closed form on the frozen features of the training images and their mirrors."""
        from icrt.train.kernel import fit_head

        t0 = time.time()
        x, xf = self._features(False), self._features(True)
        y = np.array([s.score for s in self.train_samples])
        cue_dims = len(self.model_cfg.colours)
        r = fit_head(x, y, self.domains, x_flip=xf, target=self.cfg.kernel_target, cue_dims=cue_dims)
        self.model.head.set(r["mean"], r["std"], r["centres"], r["alpha"], r["gamma"], r["bias"], r["levels"],
                            r["spread"], r["sharpness"])
        cv = "  ".join(f"{c['g']:g}/{c['lambda']:g}" + (f"/{c['cue_share']:g}" if cue_dims else "") +
                       f": {c['srcc']:.4f}/{c['mean_category_srcc']:.4f}" for c in r["cv"])
        logger.info(f"kernel head on {x.shape[1]} features of {len(y)} images (+ mirrors) in {time.time() - t0:.0f}s; "
                    f"5-fold CV SRCC (pooled/per category) by g/lambda{'/cue share' if cue_dims else ''}  {cv}  -> g "
                    f"{r['g']:g}, lambda {r['lambda']:g}" + (f", cue share {r['cue_share']:g}" if cue_dims else "") +
                    f" (targets: {self.cfg.kernel_target})")
        return {"kernel_g": float(r["g"]), "kernel_lambda": float(r["lambda"]), "kernel_cv_srcc": float(r["cv_srcc"]),
                "kernel_cv_mean_category_srcc": float(r["cv_mean_category_srcc"]),
                **({"kernel_cue_share": float(r["cue_share"])} if cue_dims else {})}

    def train_step(self, x, y, idx) -> dict:
        x, y = x.to(self.device), y.to(self.device)
        self.model.train()
        if self.frozen:
            self.model.backbone.eval()
        terms = {}
        if self.use_text:
            # Algorithm 1: the momentum model's entropies of this batch enter the FIFO buffers first.
            self.buffers.push(self._momentum_entropy(x), self.text_entropy[idx], idx)
        z = self.model.features(x)
        score = self.model.score_from_features(z)
        loss = self.regression_loss(score, y, idx)
        terms[self.cfg.loss] = loss.item()
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

    # --- persistence hooks (the loop, checkpoints and resume live in train.trainer.Trainer) ------
    def checkpoint_extra(self) -> dict:
        return {"projection": self.proj.state_dict() if self.proj else None}

    def extra_state(self) -> dict:
        if not self.use_text:
            return {}
        return {"proj": self.proj.state_dict(), "momentum": self.momentum_model.state_dict(),
                "buffers": self.buffers.state_dict()}

    def load_extra_state(self, s: dict) -> None:
        if self.use_text:
            self.proj.load_state_dict(s["proj"])
            self.momentum_model.load_state_dict(s["momentum"])
            self.buffers.load_state_dict(s["buffers"])


register_trainer("d2s", D2STrainer)
