"""``icrt info``: a bundle's model card as readable text."""
from __future__ import annotations

import json

from .manifest import Manifest


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, (dict, list)):
        return json.dumps(v)
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
            lines.append(f"    {e.get('precision', '?'):<5} {e.get('file')}  TensorRT {e.get('tensorrt')}, "
                         f"sm {e.get('compute_capability')}, batch {e.get('min_batch', '?')}/{e.get('opt_batch', '?')}/"
                         f"{e.get('max_batch', '?')}")
    if m.parity:
        lines.append("  measured agreement (per precision)")
        for prec, figs in m.parity.items():
            figs = figs if isinstance(figs, dict) else {"value": figs}
            lines.append(f"    {prec:<5} " + ", ".join(f"{k} {_fmt(v)}" for k, v in figs.items()))
    if m.calibration:
        lines.append("  calibration   " + ", ".join(f"{k} {_fmt(v)}" for k, v in m.calibration.items()))
    if m.model_card:
        lines.append("  model card")
        for k, v in m.model_card.items():
            lines.append(f"    {k}: {_fmt(v)}")
    if m.versions:
        lines.append("  exported with " + ", ".join(f"{k} {v}" for k, v in m.versions.items()))
    return "\n".join(lines) + "\n"
