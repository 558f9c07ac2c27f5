"""D2S (Describe-to-Score) scorer: timm CNN -> attention pooling -> MLP head -> sigmoid score.

Inference uses only this module; the projection and text teacher used in training live in
``train.d2s_trainer``. Attention pooling is timm's CLIP-style ``AttentionPool2d``: the mean token
attends over the spatial tokens, with learned positional embeddings defined at the training feature
size and resampled (bicubic) to other input sizes. The paper does not specify the pooling further.

icrt extension ``pool="stats"``: per-channel statistics over space (``stats``: mean and standard deviation
by default; quantiles too) of the output of every backbone stage from ``stats_from`` on, concatenated
(:class:`StageStats`). Complexity is a property of texture and layout at several scales; on Savoias, a
frozen ImageNet EfficientNet-Lite with these statistics and a linear head beats its final pooled feature by
~0.08 SRCC, and an RBF kernel head (``head="kernel"``, :class:`KernelHead`) on mean and quantiles gains
another ~0.02 (docs/default_model.md).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from icrt.train.models.colours import ColourCounts


@dataclass
class D2SConfig:
    backbone: str = "resnet18"
    pretrained: str = "imagenet"  # imagenet | none | FILE (a timm-loadable weights file)
    image_size: int = 512
    pool_head_dim: int = 64
    head_hidden: int = 512
    head_dropout: float = 0.1
    cues: bool = False  # icrt extension: concatenate low-level cues (LowLevelCues) to the pooled feature
    mean: tuple = (0.485, 0.456, 0.406)  # input normalisation, needed by the cues to recover pixels
    std: tuple = (0.229, 0.224, 0.225)
    interpolation: str = "bilinear"  # resize filter the backbone's weights were trained with
    pool: str = "attention"  # attention (paper) | stats: mean + std of several stages | means: their means only (icrt)
    stats_from: int = 2  # stats: first stage (0-based) whose output is pooled
    stats: tuple = ("mean", "std")  # stats: what is taken of each channel over space (STATISTICS)
    last_stats: tuple = ()  # stats: what is taken of each backbone's last stage instead (() the same as stats)
    head: str = "mlp"  # mlp (paper) | linear (standardised features -> one linear layer) | kernel (KernelHead)
    colours: tuple = ()  # icrt extension: bits per channel of the in-graph colour counts (ColourCounts), () none
    colour_stride: int = 1  # the colour counts read every colour_stride-th pixel each way

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "D2SConfig":
        d = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        for k in ("mean", "std", "stats", "last_stats", "colours"):
            if k in d:
                d[k] = tuple(d[k])
        return cls(**d)


class Backbones(nn.ModuleList):
    """Several backbones reading the same input (``--backbone a+b``): :func:`stage_outputs` gives each one's stages
    in turn, so the statistics pooling concatenates theirs. On Savoias, EfficientNet-Lite0 + Lite1 statistics beat
    either alone by ~0.008 SRCC in cross-validation (docs/default_model.md)."""


def create_backbone(name: str, pretrained: str = "none") -> nn.Module:
    """A timm CNN with its global pool and classifier removed (outputs the feature map); weights are
    resolved by :mod:`train.weights` (local file, installed weights package, then the hub). ``a+b``: the
    :class:`Backbones` of each (``pretrained`` imagenet or none: one weights file cannot serve two models)."""
    from icrt.train.weights import WeightsError
    from icrt.train.weights import create_backbone as create

    names = name.split("+")
    if len(names) == 1:
        return create(name, pretrained, num_classes=0, global_pool="")
    if not all(names):
        raise WeightsError(f"--backbone {name!r}: expected timm model names joined by '+'")
    if pretrained not in (None, "", "none", "imagenet"):
        raise WeightsError(f"--pretrained {pretrained}: a weights file fits one backbone, not {name}")
    return Backbones([create(n, pretrained, num_classes=0, global_pool="") for n in names])


def stage_outputs(backbone: nn.Module, x: torch.Tensor, first: int) -> list[torch.Tensor]:
    """The output of every backbone stage from ``first`` (0-based) on.

    EfficientNet-style timm models (``conv_stem``, ``blocks``) are walked block stage by block stage (7
    stages for EfficientNet-Lite; the 1x1 ``conv_head`` is not used); other timm models give their
    ``forward_intermediates`` stages. :class:`Backbones`: each member's stages, one member after the other.
    """
    if isinstance(backbone, Backbones):
        return [f for b in backbone for f in stage_outputs(b, x, first)]
    if not (hasattr(backbone, "conv_stem") and hasattr(backbone, "blocks")):
        n = len(backbone.feature_info)
        return backbone.forward_intermediates(x, indices=list(range(first, n)), intermediates_only=True)
    h, out = backbone.bn1(backbone.conv_stem(x)), []
    for i, stage in enumerate(backbone.blocks):
        h = stage(h)
        if i >= first:
            out.append(h)
    return out


def mean_std(f: torch.Tensor) -> torch.Tensor:
    """N x C x H x W -> N x 2C: the mean, then the standard deviation, over space."""
    return torch.cat([f.mean((2, 3)), f.flatten(2).std(2)], 1)


# Per-channel statistics over space StageStats can take; q10 / median / q90 are nearest-rank quantiles, relu the
# mean of max(x, 0) (with the mean: the mean of each side of zero; as informative as the quantiles in
# cross-validation on Savoias at a fraction of their cost: onnxruntime's CPU TopK took 6 ms an image).
QUANTILES = {"q10": 0.1, "median": 0.5, "q90": 0.9}
STATISTICS = ("mean", "std", "relu", *QUANTILES, "max")


class StageStats(nn.Module):
    """Stage outputs -> the chosen statistics of every channel over space, stage by stage, concatenated.

    A module of its own so that export keeps these nodes in fp32 (the kind's ``tail``): quantiles come from
    TopK, whose values int8 would round. Quantiles at or above the median take the largest values, those below
    the smallest, so K stays at most about half the positions (TensorRT's TopK takes K <= 3840: stage 2 of an
    EfficientNet-Lite at 384 px has 2,304 positions). For ("mean", "std") the layout is that of :func:`mean_std`
    per stage (checkpoints of earlier versions load unchanged).

    ``last``: the statistics of each backbone's last stage instead (``groups``: how many stage outputs each
    backbone gives, in order; default one backbone). On Lite0 + Lite1 the last stage's mean alone does as well in
    cross-validation as its mean and positive part, at 640 fewer columns (docs/default_model.md).
    """

    def __init__(self, stats=("mean", "std"), last=None, groups=None):
        super().__init__()
        for st in (stats, last or stats):
            unknown = [s for s in st if s not in STATISTICS]
            if unknown or not st or len(set(st)) != len(st):
                raise ValueError(f"stats {list(st)}: expected distinct names from {', '.join(STATISTICS)}")
        self.stats = tuple(stats)
        self.last = tuple(last) if last else None
        self.groups = tuple(groups) if groups else None

    def plan(self, count: int) -> list[tuple]:
        """The statistics of each of ``count`` stage outputs."""
        if self.last is None:
            return [self.stats] * count
        ends, at = set(), 0
        for g in self.groups or (count,):
            at += g
            ends.add(at - 1)
        return [self.last if i in ends else self.stats for i in range(count)]

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        out = []
        for f, stats in zip(feats, self.plan(len(feats))):
            flat = f.flatten(2)
            n = int(flat.shape[2])  # a constant in the exported graph: the model input side is fixed
            pos = {q: int(round(p * (n - 1))) for q, p in QUANTILES.items() if q in stats}  # rank, ascending
            upper = [p for p in pos.values() if p >= (n - 1) / 2]
            lower = [p for p in pos.values() if p < (n - 1) / 2]
            top = flat.topk(n - min(upper), dim=2).values if upper else None  # descending
            bottom = flat.topk(max(lower) + 1, dim=2, largest=False).values if lower else None  # ascending
            for s in stats:
                if s == "mean":
                    out.append(flat.mean(2))
                elif s == "std":
                    out.append(flat.std(2))
                elif s == "max":
                    out.append(flat.amax(2))
                elif s == "relu":
                    out.append(flat.clamp_min(0).mean(2))
                elif pos[s] >= (n - 1) / 2:  # the rank-p value is the (n - 1 - p)-th largest
                    out.append(top[..., n - 1 - pos[s]])
                else:
                    out.append(bottom[..., pos[s]])
        return torch.cat(out, 1)


def stage_stats(backbone: nn.Module, x: torch.Tensor, first: int, std: bool = True) -> torch.Tensor:
    """Mean (and standard deviation) over space of each stage output from ``first`` on, concatenated."""
    return StageStats(("mean", "std") if std else ("mean",))(stage_outputs(backbone, x, first))


def stage_counts(backbone: nn.Module, first: int) -> list[int]:
    """How many stage outputs from ``first`` on each backbone gives (one entry per member of :class:`Backbones`)."""
    if isinstance(backbone, Backbones):
        return [c for b in backbone for c in stage_counts(b, first)]
    n = len(backbone.blocks) if hasattr(backbone, "blocks") and hasattr(backbone, "conv_stem") else len(backbone.feature_info)
    if not 0 <= first < n:
        raise ValueError(f"stats_from {first} is outside the backbone's {n} stages")
    return [n - first]


def stage_stats_dim(backbone: nn.Module, first: int, stats=("mean", "std")) -> int:
    """Width of the pooled feature; ``stats``: statistic names, or a :class:`StageStats`."""
    module = stats if isinstance(stats, StageStats) else StageStats(stats)
    stage_counts(backbone, first)  # checks first
    was_training = backbone.training
    backbone.eval()
    with torch.no_grad():
        dim = module(stage_outputs(backbone, torch.zeros(1, 3, 64, 64), first)).shape[1]
    backbone.train(was_training)
    return dim


class FeatureNorm(nn.Module):
    """A fixed standardisation (x - mean) / std; the linear head's trainer sets it from training features."""

    def __init__(self, dim: int):
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class KernelHead(nn.Module):
    """RBF kernel ridge regression on standardised features (``--fit kernel``; fitted by :mod:`train.kernel`):
    ``out = sum_i alpha_i exp(-gamma |z - c_i|^2) + bias``, the centres ``c_i`` being the standardised training
    features, stored as int8 codes with one power-of-two scale per feature (:func:`train.kernel.int8_columns`:
    they are most of the head's size; the fit solves with the stored values). Earlier checkpoints keep
    their fp16 centres (scale 1).

    Category mode (``--kernel-target category``; ``alpha`` has 1 + C columns): the first output is the score
    standardised within its category, the others the image's affinity to each of the C training categories;
    ``score = softmax(sharpness * affinities) . levels + spread * z`` (``levels``: each category's mean score,
    ``spread``: the mean of their standard deviations). No category is needed at inference.

    The buffers are empty until the trainer sets them; a checkpoint's own sizes are taken when it loads.
    """

    _sized = ("centres", "centre_sq", "alpha", "bias", "levels")
    _centre_types = (torch.int8, torch.float16)  # int8 codes; fp16 in earlier checkpoints
    _added = {"levels": torch.zeros(0), "spread": torch.zeros(()), "sharpness": torch.zeros(())}  # since 0.1 (category)

    def __init__(self, dim: int):
        super().__init__()
        self.norm = FeatureNorm(dim)
        self.register_buffer("centres", torch.zeros(0, dim, dtype=torch.int8))
        self.register_buffer("centre_scale", torch.ones(dim))
        self.register_buffer("centre_sq", torch.zeros(0))
        self.register_buffer("alpha", torch.zeros(0))
        self.register_buffer("gamma", torch.zeros(()))
        self.register_buffer("bias", torch.zeros(()))
        for name, value in self._added.items():
            self.register_buffer(name, value.clone())

    def set(self, mean, std, centres, alpha, gamma: float, bias, levels=None, spread: float = 0.0,
            sharpness: float = 0.0) -> None:
        """Install a fit (numpy arrays or tensors); ``centres`` are standardised features, stored as int8 codes.
        ``alpha`` [n] (score) or [n, 1 + C] with ``bias`` [1 + C] and ``levels`` [C] (category mode)."""
        from icrt.train.kernel import int8_columns

        codes, scale = int8_columns(torch.as_tensor(centres).double().numpy())
        self.norm.mean.copy_(torch.as_tensor(mean, dtype=torch.float32))
        self.norm.std.copy_(torch.as_tensor(std, dtype=torch.float32))
        self.centres = torch.from_numpy(codes)
        self.centre_scale.copy_(torch.from_numpy(scale))
        self.centre_sq = (self._centres() ** 2).sum(1)
        self.alpha = torch.as_tensor(alpha, dtype=torch.float32).clone()
        self.gamma.fill_(float(gamma))
        self.bias = torch.as_tensor(bias, dtype=torch.float32).clone().reshape(self.alpha.shape[1:])
        if self.alpha.dim() == 2 and (levels is None or len(levels) != self.alpha.shape[1] - 1):
            raise ValueError("a category-mode kernel head needs one level per category column")
        self.levels = torch.as_tensor(levels if levels is not None else [], dtype=torch.float32).clone()
        self.spread.fill_(float(spread))
        self.sharpness.fill_(float(sharpness))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        for name, value in self._added.items():  # checkpoints from before category mode
            state_dict.setdefault(prefix + name, value.clone())
        state_dict.setdefault(prefix + "centre_scale", torch.ones_like(self.centre_scale))  # fp16 centres
        centres = state_dict.get(prefix + "centres")
        if isinstance(centres, torch.Tensor) and centres.dtype not in self._centre_types:
            raise ValueError(f"kernel head centres of type {centres.dtype}: int8 (or fp16) expected")
        for name in self._sized:  # take the checkpoint's sizes (number of centres, score or category mode)
            t = state_dict.get(prefix + name)
            if isinstance(t, torch.Tensor):
                setattr(self, name, torch.empty_like(t, dtype=t.dtype if name == "centres" else getattr(self, name).dtype))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def _centres(self) -> torch.Tensor:
        return self.centres.float() * self.centre_scale

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        z = self.norm(z)
        d2 = (z * z).sum(1, keepdim=True) - 2 * z @ self._centres().t() + self.centre_sq
        out = torch.exp(-self.gamma * d2.clamp_min(0)) @ self.alpha + self.bias
        if self.alpha.dim() == 1:
            return out.unsqueeze(1)
        q = torch.softmax(self.sharpness * out[:, 1:], 1)
        return (q @ self.levels + self.spread * out[:, 0]).unsqueeze(1)


class LowLevelCues(nn.Module):
    """Classic complexity cues computed inside the graph (so they export with the model).

    Edge density and compression ratio reach SRCC ~0.4-0.5 on Savoias on their own; with ~1k training
    images a from-scratch CNN gains from having them handed over. Per image (or patch): mean Sobel gradient
    magnitude and soft edge densities at three scales, grey-level contrast, mean local variance, per-channel
    colour spread and mean saturation; log-scaled and batch-normalised.
    """

    n_features = 15

    def __init__(self, mean, std):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        sobel = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]]) / 4.0
        self.register_buffer("kernels", torch.stack([sobel, sobel.t()]).unsqueeze(1), persistent=False)
        self.register_buffer("luma", torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1), persistent=False)
        self.norm = nn.BatchNorm1d(self.n_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        import torch.nn.functional as F

        rgb = x * self.std + self.mean  # back to [0, 1]
        grey = (rgb * self.luma).sum(1, keepdim=True)
        feats = []
        g = grey
        for scale in range(3):
            if scale:
                g = F.avg_pool2d(g, 2)
            grad = F.conv2d(g, self.kernels)
            mag = torch.sqrt((grad * grad).sum(1) + 1e-6)
            feats += [mag.mean((1, 2)), torch.sigmoid((mag - 0.05) / 0.01).mean((1, 2)),
                      torch.sigmoid((mag - 0.15) / 0.02).mean((1, 2))]
        mu = F.avg_pool2d(grey, 7, 1)
        local_var = (F.avg_pool2d(grey * grey, 7, 1) - mu * mu).clamp_min(0)
        feats += [grey.std((1, 2, 3)), local_var.mean((1, 2, 3))]
        feats += list(rgb.std((2, 3)).unbind(1))
        feats.append((rgb.amax(1) - rgb.amin(1)).mean((1, 2)))
        f = torch.stack(feats, 1)
        return self.norm(torch.log(f + 1e-3))


class D2S(nn.Module):
    def __init__(self, cfg: D2SConfig, load_pretrained: bool = True):
        super().__init__()
        from timm.layers import AttentionPool2d

        if cfg.pool not in ("attention", "stats", "means"):
            raise ValueError(f"unknown pool {cfg.pool!r} (attention|stats|means)")
        if cfg.head not in ("mlp", "linear", "kernel"):
            raise ValueError(f"unknown head {cfg.head!r} (mlp|linear|kernel)")
        self.cfg = cfg
        self.backbone = create_backbone(cfg.backbone, cfg.pretrained if load_pretrained else "none")
        self.stats = None
        if cfg.pool in ("stats", "means"):
            self.pool = None
            last = cfg.last_stats if cfg.pool == "stats" and cfg.last_stats else None
            self.stats = StageStats(cfg.stats if cfg.pool == "stats" else ("mean",), last,
                                    stage_counts(self.backbone, cfg.stats_from))
            dim = stage_stats_dim(self.backbone, cfg.stats_from, self.stats)
        elif isinstance(self.backbone, Backbones):
            raise ValueError(f"--backbone {cfg.backbone}: several backbones need --pool stats or means")
        else:
            dim = self.backbone.num_features
            reduction = self.backbone.feature_info[-1]["reduction"] if hasattr(self.backbone, "feature_info") else 32
            feat = max(1, cfg.image_size // reduction)
            # head_dim must divide the width (e.g. RegNetX-200MF has 368 channels: 8 heads of 46)
            head_dim = max(d for d in range(1, cfg.pool_head_dim + 1) if dim % d == 0)
            self.pool = AttentionPool2d(dim, feat_size=feat, out_features=dim, head_dim=head_dim,
                                        pool_type="token")
        self.cues = LowLevelCues(cfg.mean, cfg.std) if cfg.cues else None
        if self.cues is not None:
            dim += LowLevelCues.n_features
        self.colours = ColourCounts(cfg.mean, cfg.std, cfg.colours, cfg.colour_stride) if cfg.colours else None
        if self.colours is not None:
            dim += len(cfg.colours)
        if cfg.head == "linear":
            self.head = nn.Sequential(FeatureNorm(dim), nn.Linear(dim, 1))
        elif cfg.head == "kernel":
            self.head = KernelHead(dim)
        else:
            self.head = nn.Sequential(
                nn.Linear(dim, cfg.head_hidden), nn.ReLU(inplace=True), nn.Dropout(cfg.head_dropout),
                nn.Linear(cfg.head_hidden, 1),
            )
        self.feature_dim = dim

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """z_v of Eq. 8: the pooled visual feature (with the low-level cues and colour counts appended when enabled)."""
        if self.pool is None:
            z = self.stats(stage_outputs(self.backbone, x, self.cfg.stats_from))
        else:
            z = self.pool(self.backbone.forward_features(x))
        if self.cues is not None:
            z = torch.cat([z, self.cues(x)], 1)
        if self.colours is not None:  # last: the kernel head scales these columns as one block (train.kernel)
            z = torch.cat([z, self.colours(x)], 1)
        return z

    def score_from_features(self, z: torch.Tensor) -> torch.Tensor:
        if self.cfg.head == "kernel":  # fitted on the scores themselves (train.kernel), kept in [0, 1]
            return self.head(z).clamp(0.0, 1.0).squeeze(-1)
        return torch.sigmoid(self.head(z)).squeeze(-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.score_from_features(self.features(x))
