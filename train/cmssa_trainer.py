"""CM-SSA training (paper Sec. 3.2 and 4.2; reference code First-Cross-Model-ICA).

L = alpha * L_A + beta * L_C (alpha 0.1, beta 0.9), both MSE:
- L_C: the complexity score (expectation over the level probabilities, or the first level's probability)
  against the MOS (Eq. 6-7);
- L_A: the cosine between the image feature under the alignment branch's visual prompts and the frozen
  text encoder's feature of the image's caption, against 1. The paper's Eq. 8 writes a softmax over the
  batch, which cannot be 1 for every image at once; the reference code regresses the cosine itself to 1,
  and so do we. Caption features are computed once before training (the text tower is frozen, so this
  is exact). alpha = 0 trains the complexity branch alone and needs no captions (Table 3's BranchC row).

Adam, lr 1e-4, batch 64, 50 epochs, early stop after 15 epochs without a validation SRCC gain; only
the prompt parameters (and their projections) are optimised. Training inputs are random size x size crops
of the unresized image (upscaled only when its short side is below the patch) plus a horizontal flip;
validation scores every patch of a stride-64 grid with the runtime's numpy code and averages.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from icrt.runtime.base.errors import UserInputError
from icrt.runtime.bundle.preprocessing import Preprocessing
from icrt.train.kinds import register_trainer
from icrt.train.models.cmssa import CMSSA, CMSSAConfig
from icrt.train.trainer import RunConfig, Trainer, load_splits

logger = logging.getLogger(__name__)


@dataclass
class CMSSATrainConfig(RunConfig):
    out: str = "runs/cmssa"
    epochs: int = 50
    batch_size: int = 64
    lr: float = 1e-4
    alpha: float = 0.1  # weight of L_A (scene semantic alignment)
    beta: float = 0.9  # weight of L_C (complexity)
    early_stop: int = 15  # epochs without a val SRCC gain; 0 disables


class CMSSATrainer(Trainer):
    kind = "cmssa"
    config_class = CMSSATrainConfig

    def __init__(self, cfg: CMSSATrainConfig, samples=None):
        super().__init__(cfg)
        self.model_cfg = CMSSAConfig.from_dict(cfg.model)
        self.train_samples, self.val_samples = load_splits(cfg, need_captions=cfg.alpha > 0, samples=samples)
        self.model = CMSSA(self.model_cfg).to(self.device)
        prep = {"resize": "patches", "size": self.model.image_size, "stride": 64,
                "mean": self.model_cfg.mean, "std": self.model_cfg.std}
        prep.update({k: v for k, v in cfg.preprocessing.items() if v is not None})
        self.prep = Preprocessing.from_dict(prep)
        if self.prep.size != self.model.image_size:
            raise UserInputError(f"input side {self.prep.size} (--image-size) != the CLIP image tower's {self.model.image_size}")
        self.caption_feats = None
        if cfg.alpha > 0:
            t0 = time.time()
            self.caption_feats = self.model.encode_captions([s.caption for s in self.train_samples], device=self.device)
            logger.info(f"encoded {len(self.train_samples)} captions with the frozen {self.model_cfg.backbone} text tower "
                        f"in {time.time() - t0:.1f}s")
        self.optimizer = torch.optim.Adam(self.model.prompt_parameters(), lr=cfg.lr)
        self.build_data()
        n_train = sum(p.numel() for p in self.model.prompt_parameters())
        n_all = sum(p.numel() for p in self.model.parameters())
        logger.info(f"CM-SSA on {self.model_cfg.backbone}: {n_train:,} trainable prompt parameters of {n_all:,}; "
                    f"prompt depth {self.model.depth}, {self.model_cfg.levels} levels, score {self.model_cfg.score}")

    def train_step(self, x, y, idx) -> dict:
        x, y = x.to(self.device), y.to(self.device)
        self.model.train()
        score = self.model(x)
        l_c = self.regression_loss(score, y, idx)
        loss = self.cfg.beta * l_c
        terms = {"l_c": l_c.item()}
        if self.caption_feats is not None:
            cos = self.model.alignment(x, self.caption_feats[idx].to(self.device))
            l_a = F.mse_loss(cos, torch.ones_like(cos))
            loss = loss + self.cfg.alpha * l_a
            terms["l_a"] = l_a.item()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        terms["loss"] = loss.item()
        return terms

    # last.pt holds the prompts only: the frozen CLIP is rebuilt from the config on resume.
    def model_state(self) -> dict:
        return self.model.prompts.state_dict()

    def load_model_state(self, state: dict) -> None:
        self.model.prompts.load_state_dict(state)


register_trainer("cmssa", CMSSATrainer)
