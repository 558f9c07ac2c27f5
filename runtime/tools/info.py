"""``icrt info``: a bundle's model card as readable text: the card a person reads first (what the model is, what
it was trained on, licence, what a score means, limits, accuracy), the internals after it with ``--verbose``.

A bundle is untrusted: the free-form parts of its manifest (``model_card``, ``versions``, names) are shown
whatever their shape (a field of an unexpected type is printed as JSON, never walked into), and every line is
made printable (``runtime.base.text.printable``: control characters such as ESC and BEL, which a terminal would
obey, are shown as ``\\xNN``)."""
from __future__ import annotations

import json
from collections.abc import Mapping

from icrt.runtime.base.text import printable
from icrt.runtime.bundle.manifest import Manifest
from icrt.runtime.bundle.precisions import precision_names

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


# A bundle's forms: (key in the card's held-out figures, precision, backend files key, where it runs)
FORM_ROWS = (("fp32", "fp32", "onnxruntime", "onnxruntime CPU/GPU, OpenVINO, TensorRT"),
             ("fp16", "fp16", "onnxruntime", "TensorRT (GPU); slow on CPUs"),
             ("int8", "int8", "onnxruntime", "onnxruntime and OpenVINO CPU"),
             ("int8-tensorrt", "int8", "tensorrt", "TensorRT (GPU, Jetson)"),
             ("bf16", "bf16", "onnxruntime", "OpenVINO on CPUs with bf16 units; TensorRT 10"))


def _num(v) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def forms(m: Manifest) -> list[str]:
    """Per form the bundle carries: where it runs, how closely it follows fp32 and what it costs in accuracy
    (SRCC against human ratings, and its drop from fp32's) on images the model never saw, when recorded."""
    held = _get(m.model_card.to_dict(), "heldout")
    base = _num(_get(_get(held, "fp32"), "srcc"))
    rows = []
    for key, prec, backend, where in FORM_ROWS:
        name = m.file_name(prec, backend)
        if not name or (backend == "tensorrt" and name == m.file_name(prec, "onnxruntime")):
            continue
        par = m.parity.get(prec)
        if par is not None and backend == "tensorrt":
            par = par.forms.get("tensorrt")
        parts = [f"{key:<14} {name:<20} {where}"]
        agree = par.srcc if par is not None else None
        if prec != "fp32" and agree is not None:
            parts.append(f"agrees with fp32 at SRCC {agree:.4f} ({_fmt(par.n if par.n is not None else '?')} images)")
        h = _get(held, key)
        srcc = _num(_get(h, "srcc"))
        if srcc is not None:
            text = f"held-out SRCC {srcc:.3f}, per category {_fmt(_get(h, 'mean_category_srcc'))}"
            if prec != "fp32" and base is not None:
                drop = base - srcc
                text += f" ({'loses' if drop > 0 else 'gains'} {abs(drop):.3f})"
            parts.append(text)
        rows.append("    " + "; ".join(parts))
    return (["  forms (agreement with fp32 on the check images; held-out: images the model never saw)"] + rows
            if rows else [])


CARD_FIELDS = (("summary", "what"), ("training_data", "trained on"), ("licence", "licence"),
               ("score_meaning", "scores"), ("limits", "limits"), ("recipe", "recipe"))


def _card(m: Manifest, card: dict) -> list[str]:
    """What a person reads first: what the model is, what it was trained on, its licence, what a score means, its
    limits, its held-out accuracy (in one line a form), and what the bundle holds."""
    head = f"{m.name}" + (f"  version {m.version}" if m.version else "") + f"  ({m.kind})"
    lines = [head]
    for key, label in CARD_FIELDS:
        if key in card:
            lines.append(f"  {label:<13} {_fmt(card.pop(key))}")
    lines.append(f"  score range   {_fmt(list(m.score.range))}" + (f": {m.score.meaning}" if m.score.meaning else ""))
    held = card.get("heldout")
    if isinstance(held, Mapping):
        for prec in [p for p in (*precision_names(), "int8-tensorrt") if isinstance(held.get(p), Mapping)][:3]:
            f = held[prec]
            lines.append(f"  accuracy      {prec}: SRCC {_fmt(f.get('srcc'))} pooled, {_fmt(f.get('mean_category_srcc'))} "
                         f"mean per category, on {_fmt(held.get('images', '?'))} held-out images")
    checked = f"; SHA-256 of {len(m.sha256)} file(s) checked when loaded" if m.sha256 else ""
    lines.append(f"  bundle        {m.root} ({', '.join(m.precisions())}{checked})")
    return lines


def model_card(m: Manifest, verbose: bool = False) -> str:
    """The card (:func:`_card`); with ``verbose``, the internals after it: input, preprocessing, files, engines,
    forms, parity, calibration, the card's other fields and the library versions."""
    card = m.model_card.to_dict()
    lines = _card(m, card)
    if not verbose:
        lines.append("  (icrt info --verbose: input, preprocessing, files, engines, parity, calibration, versions)")
        return "\n".join(printable(line) for line in lines) + "\n"
    p = m.preprocessing
    if p.resize == "square":
        geo = f"resize to {p.size}x{p.size}" + (f"; JPEGs decoded at >= {p.draft:g} x that side (draft)"
                                                 if p.draft != 1.0 else "")
    else:
        geo = (f"{p.size}x{p.size} patches, stride {p.stride}, pooled by {p.pool}"
               + (f", long side capped at {p.max_long_side}" if p.max_long_side else ""))
    lines += [f"  input         {m.input_name}: N x 3 x {p.size} x {p.size} float32 (NCHW, dynamic batch)",
              f"  preprocessing {geo}; {p.interpolation}; mean {list(p.mean)}, std {list(p.std)}",
              "  precisions"]
    for prec in m.precisions():
        files = ", ".join(f"{b}: {f}" for b, f in m.files[prec].items())
        lines.append(f"    {prec:<5} {files}")
    if m.sha256:
        lines.append("  sha256")
        for name, digest in m.sha256.items():
            lines.append(f"    {digest}  {name}")
    if m.engines:
        lines.append("  TensorRT engines")
        for e in m.engines:
            lines.append(f"    {e.precision or '?':<5} {e.file}  TensorRT {e.tensorrt}, sm {e.compute_capability}, "
                         f"batch {e.min_batch or '?'}/{e.opt_batch or '?'}/{e.max_batch or '?'}")
    lines += forms(m)
    if m.parity:
        lines.append("  agreement with fp32 (check images)")
        for prec, figs in m.parity.items():
            keys = [k for k in ("n", "srcc", "max_abs_diff", "label_srcc", "label_plcc") if getattr(figs, k) is not None]
            text = ", ".join(f"{k} {_fmt(getattr(figs, k))}" for k in keys)
            trt = figs.forms.get("tensorrt")
            if trt is not None and trt.srcc is not None:
                text += f"; TensorRT form srcc {_fmt(trt.srcc)}"
            if figs.meets_target is not None and figs.target_srcc is not None:
                target = f"srcc >= {_fmt(figs.target_srcc)}" + (
                    f", max_abs_diff <= {_fmt(figs.target_max_diff)}" if figs.target_max_diff is not None else "")
                text += f"; target {target}: {'met' if figs.meets_target else 'NOT met'}"
            if figs.run_on:
                text += f" ({figs.run_on})"
            lines.append(f"    {prec:<5} {text}")
    calib = {k: getattr(m.calibration, k) for k in ("method", "images", "inputs", "split", "tool")}
    if any(v is not None for v in calib.values()):
        lines.append("  calibration   " + ", ".join(f"{k} {_fmt(v)}" for k, v in calib.items() if v is not None))
    if card:
        lines.append("  model card")
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
