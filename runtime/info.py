"""``icrt info``: a bundle's model card as readable text."""
from __future__ import annotations

import json
from collections.abc import Mapping

from .manifest import PRECISIONS, EngineRecord, Manifest, as_plain


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, (Mapping, list, tuple)):
        return json.dumps(as_plain(v))
    return str(v)


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
              f"  score         {_fmt(m.score.get('range', [0, 1]))}: {m.score.get('meaning', '')}".rstrip(),
              "  precisions"]
    for prec in m.precisions():
        files = ", ".join(f"{b}: {f}" for b, f in m.files[prec].items())
        lines.append(f"    {prec:<5} {files}")
    if m.engines:
        lines.append("  TensorRT engines")
        for e in m.engines:
            if not isinstance(e, EngineRecord):
                continue
            lines.append(f"    {e.precision or '?':<5} {e.file}  TensorRT {e.tensorrt}, sm {e.compute_capability}, "
                         f"batch {e.min_batch or '?'}/{e.opt_batch or '?'}/{e.max_batch or '?'}")
    if m.parity:
        lines.append("  agreement with fp32 (check images)")
        for prec, figs in m.parity.items():
            if not isinstance(figs, Mapping):
                continue
            keys = [k for k in ("n", "srcc", "max_abs_diff", "label_srcc", "label_plcc") if k in figs]
            text = ", ".join(f"{k} {_fmt(figs[k])}" for k in keys)
            trt = figs.get("tensorrt_form")
            if isinstance(trt, Mapping) and "srcc" in trt:
                text += f"; TensorRT form srcc {_fmt(trt['srcc'])}"
            lines.append(f"    {prec:<5} {text}")
    if m.calibration:
        keys = [k for k in ("method", "images", "inputs", "split", "tool") if k in m.calibration]
        lines.append("  calibration   " + ", ".join(f"{k} {_fmt(m.calibration[k])}" for k in keys))
    card = m.model_card.to_dict()
    if card:
        lines.append("  model card")
        for key, label in (("summary", "what"), ("training_data", "trained on"), ("licence", "licence"),
                           ("recipe", "recipe"), ("score_meaning", "scores"), ("limits", "not / limits")):
            if key in card:
                lines.append(f"    {label:<13} {_fmt(card.pop(key))}")
        held = card.pop("heldout", None)
        if isinstance(held, dict):
            lines.append(f"    held-out accuracy ({held.get('images', '?')} images; {held.get('split', '')})")
            for prec in PRECISIONS:
                f = held.get(prec)
                if not isinstance(f, dict):
                    continue
                lines.append(f"      {prec:<5} pooled SRCC {_fmt(f.get('srcc'))}  PLCC {_fmt(f.get('plcc'))}  |  "
                             f"mean per-category SRCC {_fmt(f.get('mean_category_srcc'))}  PLCC {_fmt(f.get('mean_category_plcc'))}")
                for cat, c in (f.get("per_category") or {}).items():
                    lines.append(f"            {cat:<16} n {c.get('n', '?'):<4} SRCC {_fmt(c.get('srcc'))}  PLCC {_fmt(c.get('plcc'))}")
        card.pop("val_metrics", None)  # the export's own check figures are listed above
        for k, v in card.items():
            lines.append(f"    {k}: {_fmt(v)}")
    if m.versions:
        lines.append("  exported with " + ", ".join(f"{k} {v}" for k, v in m.versions.items()))
    return "\n".join(lines) + "\n"
