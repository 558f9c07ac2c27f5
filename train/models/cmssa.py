"""CM-SSA (Cross-Modal Scene Semantic Alignment, BMVC 2025) on a frozen OpenCLIP ViT.

Two branches share the frozen CLIP towers; only prompt parameters (and their small projections) train.

- Scene semantic alignment branch (BranchA): ``depth`` learned visual prompts of ``n_ctx`` tokens
  (``align_vis[0]`` enters after the patch tokens, ``align_vis[i]`` replaces them before vision layer i).
  Its image feature is aligned with the frozen text encoder's feature of the image's caption (Eq. 8-9).
- Complexity regression branch (BranchC): a learned context of ``n_ctx`` tokens shared by the level prompts
  "X X ... X simple complexity." etc. (CoOp), deep text prompts replacing the context tokens before text
  layers 1..depth-1, and visual prompts *projected* from the text prompts as in MaPLe. As in the reference
  code, each visual prompt of this branch is ``Linear([text prompt_i, align_vis_i])``, so the two branches are
  coupled through the alignment branch's visual prompts.
- s_ik = logit_scale * cos(image_i, level_k); p_ik = softmax_k(s_ik). Score: ``expectation`` (default,
  sum_k p_ik * v_k with v = 0, 1/(K-1), ..., 1) or ``first-level`` (p_i1, the paper's Eq. 6 and the
  reference code). With learned prompts either reading works; the expectation makes the level names mean
  what they say (simple -> 0, high -> 1) and uses all K probabilities.

Inference needs only the complexity branch; :meth:`CMSSA.forward` returns the score (B,). Export folds
prompts and level text features to constants (:func:`fold_level_scorer`, called by the kind's ``fold``).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from icrt.runtime.bundle.preprocessing import CLIP_MEAN, CLIP_STD

# Level prompt sets. 5: the paper's Sec. 3.2 / reference code; 3 and 7: the paper's Table 4.
LEVEL_PROMPTS = {
    3: ("simple complexity", "moderate complexity", "high complexity"),
    5: ("simple complexity", "little complexity", "moderate complexity", "very complexity", "high complexity"),
    7: ("very low complexity", "fairly low complexity", "slightly low complexity", "moderate level complexity",
        "slightly high complexity", "fairly high complexity", "very high complexity"),
}
SCORE_RULES = ("expectation", "first-level")


@dataclass
class CMSSAConfig:
    backbone: str = "ViT-B-16"  # OpenCLIP architecture or model-config JSON path
    pretrained: str = "openai"  # openai | none | FILE
    levels: int = 5
    n_ctx: int = 8
    prompt_depth: int = 12  # capped at the number of transformer layers
    score: str = "expectation"  # expectation | first-level
    mean: tuple = CLIP_MEAN
    std: tuple = CLIP_STD

    def __post_init__(self):
        if self.levels not in LEVEL_PROMPTS:
            raise ValueError(f"levels must be one of {sorted(LEVEL_PROMPTS)}, not {self.levels}")
        if self.score not in SCORE_RULES:
            raise ValueError(f"score must be one of {SCORE_RULES}, not {self.score!r}")
        if self.n_ctx < 1 or self.prompt_depth < 1:
            raise ValueError("n_ctx and prompt_depth must be >= 1")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "CMSSAConfig":
        d = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        for k in ("mean", "std"):
            if k in d:
                d[k] = tuple(d[k])
        return cls(**d)


def level_values(n: int, score: str = "expectation") -> tuple:
    """Score of each level: 0 .. 1 evenly (expectation) or (1, 0, ..., 0) (first-level probability)."""
    if score == "first-level":
        return tuple(1.0 if k == 0 else 0.0 for k in range(n))
    return tuple(k / (n - 1) for k in range(n))


def encode_image_prompted(visual: nn.Module, x: torch.Tensor, shallow: torch.Tensor, deep) -> torch.Tensor:
    """OpenCLIP ViT forward with MaPLe / VPT-deep visual prompts.

    ``shallow`` (n, width) is appended after the patch tokens before ``ln_pre`` (as MaPLe); before layer i
    (1 <= i <= len(deep)) the last n tokens are replaced by ``deep[i-1]``. Pooling (class token) is taken
    without the prompt tokens.
    """
    n = shallow.shape[0]
    b = x.shape[0]
    x = visual.conv1(x)
    x = x.reshape(b, x.shape[1], -1).permute(0, 2, 1)
    cls = visual.class_embedding.to(x.dtype).view(1, 1, -1).expand(b, -1, -1)
    x = torch.cat([cls, x], dim=1) + visual.positional_embedding.to(x.dtype)
    x = visual.patch_dropout(x)
    x = torch.cat([x, shallow.to(x.dtype).unsqueeze(0).expand(b, -1, -1)], dim=1)
    x = visual.ln_pre(x)
    tr = visual.transformer
    batch_first = getattr(tr, "batch_first", True)
    for i, blk in enumerate(tr.resblocks):
        if 1 <= i <= len(deep):
            x = torch.cat([x[:, :-n], deep[i - 1].to(x.dtype).unsqueeze(0).expand(b, -1, -1)], dim=1)
        x = blk(x) if batch_first else blk(x.transpose(0, 1)).transpose(0, 1)
    pooled, _ = visual._pool(x[:, :-n])
    if visual.proj is not None:
        pooled = pooled @ visual.proj
    return pooled


class PromptedImageEncoder(nn.Module):
    """image -> feature with fixed visual prompts held as buffers (the folded, exportable encoder)."""

    def __init__(self, visual: nn.Module, shallow: torch.Tensor, deep: list[torch.Tensor]):
        super().__init__()
        self.visual = visual
        self.register_buffer("shallow", shallow.detach().clone())
        self.register_buffer("deep", torch.stack([d.detach() for d in deep]) if deep else torch.zeros(0, *shallow.shape))

    def forward(self, x):
        return encode_image_prompted(self.visual, x, self.shallow, list(self.deep.unbind(0)))


class CMSSAPrompts(nn.Module):
    """Every trainable tensor of CM-SSA (the reference's two prompt learners)."""

    def __init__(self, n_ctx: int, depth: int, text_width: int, vision_width: int):
        super().__init__()

        def init(*shape):
            return nn.Parameter(torch.randn(*shape) * 0.02)

        # BranchA: visual prompts for layers 0 .. depth-1 (PromptLearner1.compound_prompts_vis)
        self.align_vis = nn.ParameterList([init(n_ctx, vision_width) for _ in range(depth)])
        # BranchC: shared context (layer 0) and deep text prompts (layers 1 .. depth-1)
        self.ctx = init(n_ctx, text_width)
        self.text_deep = nn.ParameterList([init(n_ctx, text_width) for _ in range(depth - 1)])
        # BranchC visual prompts = Linear([text prompt, BranchA visual prompt]) per layer
        self.proj = nn.Linear(text_width + vision_width, vision_width)
        self.deep_proj = nn.ModuleList([nn.Linear(text_width + vision_width, vision_width) for _ in range(depth - 1)])

    def align_visual(self):
        return self.align_vis[0], list(self.align_vis[1:])

    def complexity_visual(self):
        shallow = self.proj(torch.cat([self.ctx, self.align_vis[0]], dim=1))
        deep = [layer(torch.cat([t, v], dim=1)) for layer, t, v in zip(self.deep_proj, self.text_deep, self.align_vis[1:])]
        return shallow, deep


class CMSSA(nn.Module):
    def __init__(self, cfg: CMSSAConfig | None = None, load_pretrained: bool = True):
        super().__init__()
        from icrt.train.text import create_openclip

        self.cfg = cfg = cfg or CMSSAConfig()
        clip, tokenizer = create_openclip(cfg.backbone, cfg.pretrained if load_pretrained else "none")
        if not hasattr(clip, "token_embedding") or not hasattr(clip.visual, "conv1"):
            raise ValueError(f"{cfg.backbone}: CM-SSA needs an OpenCLIP ViT image tower and the built-in text tower")
        self.clip = clip.eval().requires_grad_(False)
        v_layers, t_layers = len(clip.visual.transformer.resblocks), len(clip.transformer.resblocks)
        self.depth = min(cfg.prompt_depth, v_layers, t_layers)
        text_width = clip.token_embedding.weight.shape[1]
        vision_width = clip.visual.conv1.out_channels
        self.prompts = CMSSAPrompts(cfg.n_ctx, self.depth, text_width, vision_width)
        self.level_names = LEVEL_PROMPTS[cfg.levels]
        ctx = " ".join(["X"] * cfg.n_ctx)
        self.register_buffer("level_tokens", tokenizer([f"{ctx} {name}." for name in self.level_names]), persistent=False)
        self.register_buffer("level_values", torch.tensor(level_values(cfg.levels, cfg.score)), persistent=False)
        self.tokenizer = tokenizer
        size = clip.visual.image_size
        self.image_size = int(size[0] if isinstance(size, (tuple, list)) else size)

    def train(self, mode: bool = True):  # the frozen CLIP stays in eval mode
        super().train(mode)
        self.clip.eval()
        return self

    def prompt_parameters(self):
        return self.prompts.parameters()

    # --- text -----------------------------------------------------------------------------------
    def level_text_features(self) -> torch.Tensor:
        """(levels, dim) text features of the level prompts with the learned context and deep text prompts."""
        c, p, n = self.clip, self.prompts, self.cfg.n_ctx
        tokens = self.level_tokens
        k = tokens.shape[0]
        emb = c.token_embedding(tokens)
        x = torch.cat([emb[:, :1], p.ctx.to(emb.dtype).unsqueeze(0).expand(k, -1, -1), emb[:, 1 + n:]], dim=1)
        x = x + c.positional_embedding.to(x.dtype)
        batch_first = getattr(c.transformer, "batch_first", True)
        for i, blk in enumerate(c.transformer.resblocks):
            if 1 <= i <= len(p.text_deep):
                x = torch.cat([x[:, :1], p.text_deep[i - 1].unsqueeze(0).expand(k, -1, -1), x[:, 1 + n:]], dim=1)
            x = blk(x, attn_mask=c.attn_mask) if batch_first else blk(x.transpose(0, 1), attn_mask=c.attn_mask).transpose(0, 1)
        x = c.ln_final(x)
        from open_clip.transformer import text_global_pool

        x = text_global_pool(x, tokens, c.text_pool_type, eos_token_id=getattr(c, "text_eos_id", None))
        return c.text_projection(x) if isinstance(c.text_projection, nn.Linear) else x @ c.text_projection

    @torch.no_grad()
    def encode_captions(self, captions: list[str], batch_size: int = 64, device=None) -> torch.Tensor:
        """Frozen text-encoder features of captions (BranchA targets; computed once, the tower is frozen)."""
        device = device or self.level_tokens.device
        out = []
        for i in range(0, len(captions), batch_size):
            out.append(self.clip.encode_text(self.tokenizer(list(captions[i:i + batch_size])).to(device)).float().cpu())
        return torch.cat(out) if out else torch.zeros(0, 1)

    # --- image ----------------------------------------------------------------------------------
    def encode_image(self, x: torch.Tensor, branch: str = "complexity") -> torch.Tensor:
        shallow, deep = self.prompts.complexity_visual() if branch == "complexity" else self.prompts.align_visual()
        return encode_image_prompted(self.clip.visual, x, shallow, deep)

    def level_probs(self, x: torch.Tensor) -> torch.Tensor:
        f = F.normalize(self.encode_image(x, "complexity").float(), dim=-1)
        t = F.normalize(self.level_text_features().float(), dim=-1)
        return (self.clip.logit_scale.exp() * f @ t.t()).softmax(dim=-1)

    def score_from_probs(self, probs: torch.Tensor) -> torch.Tensor:
        return probs @ self.level_values

    def alignment(self, x: torch.Tensor, caption_features: torch.Tensor) -> torch.Tensor:
        """cos(image under BranchA prompts, caption feature) per image (the reference code's alignment score)."""
        f = F.normalize(self.encode_image(x, "align").float(), dim=-1)
        return (f * F.normalize(caption_features.float(), dim=-1)).sum(-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.score_from_probs(self.level_probs(x))

    # --- export ---------------------------------------------------------------------------------
    @torch.no_grad()
    def folded_parts(self):
        """(encoder with constant visual prompts, level text features, logit scale, level values)."""
        shallow, deep = self.prompts.complexity_visual()
        enc = PromptedImageEncoder(self.clip.visual, shallow, deep)
        return enc, self.level_text_features(), self.clip.logit_scale.exp(), tuple(self.level_values.tolist())


# --- the folded graph (what export writes as ONNX) ----------------------------------------------

# The five complexity levels of CM-SSA's prompts, scored 0, .25, ..., 1.
DEFAULT_LEVELS = (0.0, 0.25, 0.5, 0.75, 1.0)


class LevelScorer(nn.Module):
    """image -> encoder -> L2 norm -> @ text_matrix^T -> softmax -> (score, level probabilities).

    ``text_matrix`` is the normalised level text features times the logit scale (a constant buffer);
    ``levels`` are the score of each level.
    """

    def __init__(self, encoder: nn.Module, text_matrix: torch.Tensor, levels=DEFAULT_LEVELS):
        super().__init__()
        self.encoder = encoder
        self.register_buffer("text_matrix", text_matrix.detach().float().clone())
        self.register_buffer("levels", torch.as_tensor(levels, dtype=torch.float32).clone())
        if self.text_matrix.shape[0] != self.levels.shape[0]:
            raise ValueError(f"{self.text_matrix.shape[0]} level text features but {self.levels.shape[0]} level values")

    def forward(self, x: torch.Tensor):
        f = self.encoder(x).float()
        f = f / f.norm(dim=-1, keepdim=True)
        probs = torch.softmax(f @ self.text_matrix.t(), dim=-1)
        return probs @ self.levels, probs


def fold_level_scorer(encoder: nn.Module, text_features: torch.Tensor, logit_scale, levels=DEFAULT_LEVELS) -> LevelScorer:
    """Build the folded CM-SSA graph from the image encoder (visual prompts inside) and the level text features.

    ``text_features``: (levels, dim) raw text-tower outputs for the level prompts with the learned context;
    ``logit_scale``: the multiplier itself (CLIP stores its log: pass ``clip.logit_scale.exp()``).
    """
    with torch.no_grad():
        t = text_features.detach().float()
        t = t / t.norm(dim=-1, keepdim=True)
        scale = float(logit_scale.detach().float().item() if torch.is_tensor(logit_scale) else logit_scale)
    return LevelScorer(encoder, t * scale, levels).eval()
