"""Generate the captions that CM-SSA (scene descriptions) and D2S (four-part descriptions) learn from.

    python -m train.captions --data PATH --out captions.csv [--model instructblip|blip|blip2|PATH]
        [--preset cmssa|d2s] [--batch-size N] [--device auto|cpu|cuda] [--max-new-tokens N]

``--data``: an IC9600 folder (every image of train.txt and test.txt), a labels CSV, or a plain folder of
images. Output: a CSV ``image,caption,sha256`` whose ``image`` column is the key the training readers join
on (the IC9600 name or the CSV's path); readers ignore the hash column.

Presets:
- ``cmssa`` (default model InstructBLIP Vicuna-7B): one instruction asking for a "medium" description, one
  or two sentences on the objects, their number, positions, motion, mood and cultural context. The paper's
  Table 5 found medium-length InstructBLIP descriptions best; it does not print its instruction, so this
  wording is ours. BLIP (not instruction-tuned) captions unconditionally; BLIP-2 gets the instruction in
  its "Question: ... Answer:" form.
- ``d2s`` (default model BLIP-Large): the D2S fill-in template (Figure 5): the captioner continues each of
  "This image shows", "The main objects are", "The background looks", "The overall visual complexity is";
  the four completed sentences are joined into one caption.

Resumable: a rerun skips images whose (key, file hash) is already in ``--out``; rows are appended and
flushed (fsync) after every batch, so an interrupted run loses at most the batch in flight; a torn last
line is dropped on the next run. Images that cannot be decoded are reported and skipped (a rerun retries
them). Greedy decoding.
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import io
import logging
import os
import re
import sys

from icrt.runtime.base.errors import UserInputError, one_line
from icrt.runtime.scoring.inputs import IMAGE_EXTENSIONS

logger = logging.getLogger(__name__)

MODEL_IDS = {
    "instructblip": "Salesforce/instructblip-vicuna-7b",
    "blip": "Salesforce/blip-image-captioning-large",
    "blip2": "Salesforce/blip2-opt-2.7b",
}
PRESET_MODEL = {"cmssa": "instructblip", "d2s": "blip"}
CMSSA_INSTRUCTION = ("Describe this image in one or two sentences: the main objects and how many there are, "
                     "where they are, any motion, the mood, and the cultural context.")
D2S_TEMPLATE = ("This image shows", "The main objects are", "The background looks", "The overall visual complexity is")
HEADER = ["image", "caption", "sha256"]


class CaptionError(UserInputError):
    pass


# --- inputs ---------------------------------------------------------------------------------------


def list_images(data: str) -> list[tuple[str, str]]:
    """[(key, absolute path)]: the key is what training readers join captions on."""
    from icrt.train.data import is_ic9600, load_samples

    if is_ic9600(data):
        out = []
        for split in ("train", "test"):
            if os.path.isfile(os.path.join(data, f"{split}.txt")):
                out += [(s.key, s.image) for s in load_samples(data, split, check_images=False)]
        return list(dict.fromkeys(out))
    if os.path.isfile(data) or os.path.isfile(os.path.join(data, "labels.csv")):
        return [(s.key, s.image) for s in load_samples(data, "train", check_images=False)]
    if os.path.isdir(data):
        out = []
        for root, _, files in os.walk(data):
            for f in sorted(files):
                if f.lower().endswith(IMAGE_EXTENSIONS):
                    p = os.path.join(root, f)
                    out.append((os.path.relpath(p, data).replace(os.sep, "/"), os.path.abspath(p)))
        if not out:
            raise CaptionError(f"{data}: no images found")
        return sorted(out)
    raise CaptionError(f"{data}: not an IC9600 folder, labels CSV or image folder")


def file_hash(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


# --- the output file ------------------------------------------------------------------------------


def read_done(out: str) -> set[tuple[str, str]]:
    """(key, hash) pairs already captioned. A torn last line (interrupted write) is cut off the file."""
    if not os.path.isfile(out) or os.path.getsize(out) == 0:
        return set()
    with open(out, "rb") as f:
        data = f.read()
    if not data.endswith(b"\n"):  # interrupted mid-row: drop the partial line
        cut = data.rfind(b"\n") + 1
        with open(out, "r+b") as f:
            f.truncate(cut)
        data = data[:cut]
    rows = list(csv.reader(io.StringIO(data.decode("utf-8"))))
    if not rows:
        return set()
    if [h.strip().lower() for h in rows[0]][:2] != HEADER[:2]:
        raise CaptionError(f"{out}: exists and is not a captions CSV (header {rows[0]})")
    return {(r[0], r[2] if len(r) > 2 else "") for r in rows[1:] if len(r) >= 2 and r[1].strip()}


class CaptionWriter:
    def __init__(self, out: str):
        os.makedirs(os.path.dirname(os.path.abspath(out)) or ".", exist_ok=True)
        new = not os.path.isfile(out) or os.path.getsize(out) == 0
        self.f = open(out, "a", newline="", encoding="utf-8")
        self.w = csv.writer(self.f, lineterminator="\n")
        if new:
            self.w.writerow(HEADER)
            self.flush()

    def write(self, rows) -> None:
        self.w.writerows(rows)
        self.flush()

    def flush(self) -> None:
        self.f.flush()
        os.fsync(self.f.fileno())

    def close(self) -> None:
        self.f.close()


# --- the captioner --------------------------------------------------------------------------------


def _clean(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


class Captioner:
    """A transformers BLIP / BLIP-2 / InstructBLIP model and its processor, with the preset's prompts."""

    def __init__(self, model: str, preset: str = "cmssa", device: str = "auto", max_new_tokens: int | None = None):
        import torch
        from transformers import AutoConfig, AutoProcessor

        name = MODEL_IDS.get(model, model)
        self.device = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else
                                   ("cpu" if device == "auto" else device))
        family = AutoConfig.from_pretrained(name).model_type
        classes = {"blip": "BlipForConditionalGeneration", "blip-2": "Blip2ForConditionalGeneration",
                   "instructblip": "InstructBlipForConditionalGeneration"}
        if family not in classes:
            raise CaptionError(f"{name}: model type {family!r} is not BLIP, BLIP-2 or InstructBLIP")
        import transformers

        dtype = torch.float16 if self.device.type == "cuda" else torch.float32
        self.model = getattr(transformers, classes[family]).from_pretrained(name, dtype=dtype).to(self.device).eval()
        self.processor = AutoProcessor.from_pretrained(name)
        self.family, self.preset, self.name, self.dtype = family, preset, name, dtype
        self.max_new_tokens = max_new_tokens or (60 if preset == "cmssa" else 20)

    def prompts(self) -> list[str | None]:
        if self.preset == "d2s":
            return list(D2S_TEMPLATE)
        if self.family == "blip":
            return [None]
        if self.family == "blip-2":
            return [f"Question: {CMSSA_INSTRUCTION} Answer:"]
        return [CMSSA_INSTRUCTION]

    def _strip_prompt(self, text: str, prompt: str | None) -> str:
        text = _clean(text)
        if not prompt:
            return text
        tok = getattr(self.processor, "tokenizer", None)
        forms = [prompt]
        if tok is not None:  # the prompt as the tokenizer gives it back (case, spacing)
            forms.append(tok.decode(tok(prompt, add_special_tokens=False)["input_ids"], skip_special_tokens=True))
        for form in forms:
            form = _clean(form)
            if form and text.lower().startswith(form.lower()):
                return text[len(form):].strip()
        return text

    def generate(self, images) -> list[str]:
        import torch

        parts = [[] for _ in images]
        for prompt in self.prompts():
            kw = {"images": images, "return_tensors": "pt"}
            if prompt is not None:
                kw.update(text=[prompt] * len(images), padding=True)
            inputs = self.processor(**kw).to(self.device)
            if "pixel_values" in inputs:
                inputs["pixel_values"] = inputs["pixel_values"].to(self.dtype)
            with torch.no_grad():
                out = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens, do_sample=False)
            ids = inputs.get("input_ids")
            if self.family != "blip" and ids is not None and out.shape[1] >= ids.shape[1] \
                    and torch.equal(out[:, :ids.shape[1]].cpu(), ids.cpu()):
                out = out[:, ids.shape[1]:]  # decoder-only LLMs echo the prompt
            for i, text in enumerate(self.processor.batch_decode(out, skip_special_tokens=True)):
                answer = self._strip_prompt(text, prompt)
                if self.preset == "d2s":
                    answer = answer.rstrip(" .")
                    if answer:
                        parts[i].append(f"{prompt} {answer}.")
                elif answer:
                    parts[i].append(answer)
        return [" ".join(p) for p in parts]


# --- the run --------------------------------------------------------------------------------------


def caption_dataset(data: str, out: str, captioner, batch_size: int = 8, progress: bool = True) -> dict:
    """Caption every image of ``data`` not yet in ``out``; returns counts {total, done_before, written, failed}.
    Counts go to the ``train.captions`` logger (INFO), skipped images to it as warnings."""
    from PIL import Image

    from icrt.runtime.scoring.preprocess import load_rgb

    items = list_images(data)
    done = read_done(out)
    todo, failed = [], []
    for key, path in items:
        try:
            h = file_hash(path)
        except OSError as e:
            failed.append((key, f"unreadable: {e}"))
            continue
        if (key, h) not in done:
            todo.append((key, path, h))
    done_before = len(items) - len(todo) - len(failed)
    logger.info(f"{len(items)} images, {done_before} already captioned in {out}, "
                f"{len(todo)} to caption with {captioner.name} ({captioner.preset} preset)")
    writer = CaptionWriter(out)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(todo), desc="captions", unit="img", dynamic_ncols=True)
    written = 0
    try:
        for start in range(0, len(todo), batch_size):
            batch, images = [], []
            for key, path, h in todo[start:start + batch_size]:
                try:
                    images.append(Image.fromarray(load_rgb(path)))
                    batch.append((key, h))
                except Exception as e:  # any decoder failure: report, skip, keep going
                    failed.append((key, str(e)))
                    logger.warning(f"warning: {path}: skipped ({e})")
            rows = []
            if images:
                for (key, h), cap in zip(batch, captioner.generate(images)):
                    cap = _clean(cap)
                    if cap:
                        rows.append([key, cap, h])
                    else:
                        failed.append((key, "no caption generated"))
                writer.write(rows)
                written += len(rows)
            if bar is not None:
                bar.update(len(todo[start:start + batch_size]))
    finally:
        writer.close()
        if bar is not None:
            bar.close()
    if failed:
        logger.info(f"{len(failed)} image(s) skipped, e.g. " + "; ".join(f"{k}: {why}" for k, why in failed[:3]))
    logger.info(f"wrote {written} captions to {out}")
    return {"total": len(items), "done_before": done_before, "written": written, "failed": len(failed)}


def main(argv=None) -> int:
    from icrt.runtime.base.errors import run_command, setup_logging

    p = argparse.ArgumentParser(prog="python -m train.captions", description=__doc__.strip().splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data", required=True, help="IC9600 folder, labels CSV, or image folder")
    p.add_argument("--out", required=True, help="captions CSV (appended to; reruns skip done images)")
    p.add_argument("--model", help="instructblip | blip | blip2 | a local transformers model path "
                                   "(default: instructblip for --preset cmssa, blip for d2s)")
    p.add_argument("--preset", choices=["cmssa", "d2s"], default="cmssa")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--max-new-tokens", type=int, help="default 60 (cmssa) or 20 per template part (d2s)")
    args = p.parse_args(argv)
    setup_logging()
    return run_command(p.prog, run, args)


def run(args) -> int:
    """``python -m train.captions`` after argument parsing: 0, or 1 when some images were skipped."""
    try:
        captioner = Captioner(args.model or PRESET_MODEL[args.preset], args.preset, args.device, args.max_new_tokens)
        stats = caption_dataset(args.data, args.out, captioner, args.batch_size)
    except OSError as e:  # a model that is not there (transformers raises OSError), an unwritable --out
        raise CaptionError(one_line(e)) from None
    return 0 if stats["failed"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
