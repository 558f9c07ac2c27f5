"""``icrt info``: a bundle's model card as readable text.

A bundle is untrusted: the free-form parts of its manifest (``model_card``, ``versions``, names) are shown
whatever their shape (a field of an unexpected type is printed as JSON, never walked into), and every line is
made printable (``runtime.formats.printable``: control characters such as ESC and BEL, which a terminal would
obey, are shown as ``\\xNN``)."""
from __future__ import annotations

import json
from collections.abc import Mapping

from .formats import printable
from .manifest import Manifest
from .precisions import precision_names

MAX_VALUE = 500  # characters of one value shown


def _fmt(v) -> str:
    if isinstance(v, float):
        text = f"{v:.4g}"
    elif isinstance(v, (Mapping, list, tuple)):
        try:
            text = json.dumps(v)
        except (TypeError, ValueError, RecursionError):
            text = "?"
    else:
        text = str(v)
    return text if len(text) <= MAX_VALUE else text[:MAX_VALUE - 3] + "..."


def _get(d, key, default=None):
    """``d[key]`` when ``d`` is a mapping, else ``default`` (a malformed card is shown, not walked into)."""
    return d.get(key, default) if isinstance(d, Mapping) else default


def model_card(m: Manifest) -> str:
    p = m.preprocessing
    lines = [f"{m.name}  ({m.kind})", f"  bundle        {m.root}"]
    if p.resize == "square":
        geo = f"resize to {p.size}x{p.size}"
    else:
        geo = (f"{p.size}x{p.size} patches, stride {p.stride}, pooled by {p.pool}"
               + (f", long side capped at {p.max_long_side}" if p.max_long_side else ""))
    lines += [f"  input         {m.input_name}: N x 3 x {p.size} x {p.size} float32 (NCHW, dynamic batch)",
              f"  preprocessing {geo}; {p.interpolation}; mean {list(p.mean)}, std {list(p.std)}",
              f"  score         {_fmt(list(m.score.range))}: {m.score.meaning or ''}".rstrip(),
              "  precisions"]
    for prec in m.precisions():
        files = ", ".join(f"{b}: {f}" for b, f in m.files[prec].items())
        lines.append(f"    {prec:<5} {files}")
    if m.engines:
        lines.append("  TensorRT engines")
        for e in m.engines:
            lines.append(f"    {e.precision or '?':<5} {e.file}  TensorRT {e.tensorrt}, sm {e.compute_capability}, "
                         f"batch {e.min_batch or '?'}/{e.opt_batch or '?'}/{e.max_batch or '?'}")
    if m.parity:
        lines.append("  agreement with fp32 (check images)")
        for prec, figs in m.parity.items():
            keys = [k for k in ("n", "srcc", "max_abs_diff", "label_srcc", "label_plcc") if getattr(figs, k) is not None]
            text = ", ".join(f"{k} {_fmt(getattr(figs, k))}" for k in keys)
            trt = figs.forms.get("tensorrt")
            if trt is not None and trt.srcc is not None:
                text += f"; TensorRT form srcc {_fmt(trt.srcc)}"
            lines.append(f"    {prec:<5} {text}")
    calib = {k: getattr(m.calibration, k) for k in ("method", "images", "inputs", "split", "tool")}
    if any(v is not None for v in calib.values()):
        lines.append("  calibration   " + ", ".join(f"{k} {_fmt(v)}" for k, v in calib.items() if v is not None))
    card = m.model_card.to_dict()
    if card:
        lines.append("  model card")
        for key, label in (("summary", "what"), ("training_data", "trained on"), ("licence", "licence"),
                           ("recipe", "recipe"), ("score_meaning", "scores"), ("limits", "not / limits")):
            if key in card:
                lines.append(f"    {label:<13} {_fmt(card.pop(key))}")
        held = card.pop("heldout", None)
        if isinstance(held, Mapping):
            lines.append(f"    held-out accuracy ({_fmt(held.get('images', '?'))} images; {_fmt(held.get('split', ''))})")
            for prec in precision_names():
                f = held.get(prec)
                if not isinstance(f, Mapping):
                    if f is not None:
                        lines.append(f"      {prec:<5} {_fmt(f)}")
                    continue
                lines.append(f"      {prec:<5} pooled SRCC {_fmt(f.get('srcc'))}  PLCC {_fmt(f.get('plcc'))}  |  "
                             f"mean per-category SRCC {_fmt(f.get('mean_category_srcc'))}  "
                             f"PLCC {_fmt(f.get('mean_category_plcc'))}")
                cats = f.get("per_category")
                if isinstance(cats, Mapping):
                    for cat, c in cats.items():
                        if isinstance(c, Mapping):
                            lines.append(f"            {_fmt(cat):<16} n {_fmt(c.get('n', '?')):<4} SRCC {_fmt(c.get('srcc'))}  "
                                         f"PLCC {_fmt(c.get('plcc'))}")
                        else:
                            lines.append(f"            {_fmt(cat):<16} {_fmt(c)}")
                elif cats is not None:
                    lines.append(f"            per_category {_fmt(cats)}")
        elif held is not None:
            lines.append(f"    heldout: {_fmt(held)}")
        card.pop("val_metrics", None)  # the export's own check figures are listed above
        for k, v in card.items():
            lines.append(f"    {k}: {_fmt(v)}")
    if m.versions:
        lines.append("  exported with " + ", ".join(f"{_fmt(k)} {_fmt(v)}" for k, v in m.versions.items()))
    return "\n".join(printable(line) for line in lines) + "\n"
