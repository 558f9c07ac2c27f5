"""python -m train.captions with tiny random BLIP / InstructBLIP models saved locally (no downloads)."""
import csv
import os

import pytest
import torch

from icrt.train.captions import D2S_TEMPLATE, Captioner, caption_dataset, main, read_done
from icrt.train.data import attach_captions, load_samples, read_captions
from tests.tiny import BLIP_VISION as VIS

WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]", "this", "image", "shows", "the", "main", "objects", "are",
         "background", "looks", "overall", "visual", "complexity", "is", "a", "cat", "dog", "red", "busy", "describe",
         "one", "two", "sentences", "mood", "motion", "where", "and", ".", ",", ":"]


def _tokenizer(folder):
    from transformers import BertTokenizer

    vocab = folder / "vocab.txt"
    vocab.write_text("\n".join(WORDS) + "\n")
    return BertTokenizer(str(vocab), bos_token="[DEC]")


@pytest.fixture(scope="module")
def tiny_blip(tmp_path_factory):
    from transformers import BlipConfig, BlipForConditionalGeneration, BlipImageProcessor, BlipProcessor

    folder = tmp_path_factory.mktemp("blip")
    tok = _tokenizer(folder)
    torch.manual_seed(0)
    text = dict(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                encoder_hidden_size=32, bos_token_id=tok.convert_tokens_to_ids("[DEC]"), pad_token_id=0,
                sep_token_id=3, eos_token_id=3)
    BlipForConditionalGeneration(BlipConfig(text_config=text, vision_config=VIS, projection_dim=32)).save_pretrained(folder)
    BlipProcessor(image_processor=BlipImageProcessor(size={"height": 32, "width": 32}), tokenizer=tok).save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module")
def tiny_instructblip(tmp_path_factory):
    from transformers import (
        BlipImageProcessor,
        InstructBlipConfig,
        InstructBlipForConditionalGeneration,
        InstructBlipProcessor,
        OPTConfig,
    )

    folder = tmp_path_factory.mktemp("instructblip")
    tok, qtok = _tokenizer(folder), _tokenizer(folder)
    proc = InstructBlipProcessor(image_processor=BlipImageProcessor(size={"height": 32, "width": 32}), tokenizer=tok,
                                 qformer_tokenizer=qtok, num_query_tokens=4)  # adds the <image> token to tok
    qformer = dict(vocab_size=len(qtok), hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                   encoder_hidden_size=32, pad_token_id=0)
    text = OPTConfig(vocab_size=len(tok), hidden_size=32, ffn_dim=64, num_hidden_layers=1, num_attention_heads=2,
                     word_embed_proj_dim=32, max_position_embeddings=256, pad_token_id=0, bos_token_id=2, eos_token_id=3)
    cfg = InstructBlipConfig(vision_config=VIS, qformer_config=qformer, text_config=text.to_dict(), num_query_tokens=4,
                             image_token_index=tok.convert_tokens_to_ids("<image>"))
    torch.manual_seed(0)
    model = InstructBlipForConditionalGeneration(cfg)
    with torch.no_grad():  # a constant final hidden state whose argmax is a word: "cat cat cat ...", never stopping
        ln, head = model.language_model.model.decoder.final_layer_norm, model.language_model.lm_head
        ln.weight.zero_()
        ln.bias.zero_()
        ln.bias[0] = 1.0
        head.weight[:, 0] = 0.0
        head.weight[WORDS.index("cat"), 0] = 10.0
    model.save_pretrained(folder)
    proc.save_pretrained(folder)
    return str(folder)


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_d2s_preset_blip_joins_the_four_template_parts(tiny_blip, labels_csv, tmp_path):
    cap = Captioner(tiny_blip, "d2s", "cpu", max_new_tokens=3)
    assert cap.family == "blip" and cap.prompts() == list(D2S_TEMPLATE)
    out = tmp_path / "caps.csv"
    stats = caption_dataset(labels_csv, str(out), cap, batch_size=16, progress=False)
    assert stats == {"total": 32, "done_before": 0, "written": 32, "failed": 0}
    rows = _rows(out)
    assert [r["image"] for r in rows] == [s.key for s in load_samples(labels_csv)]
    for r in rows:  # each part starts with its template words (the random model continues it)
        assert r["caption"].startswith("This image shows ") and len(r["sha256"]) == 16
        assert sum(r["caption"].count(t) for t in D2S_TEMPLATE) >= 2
    # the training readers join this file
    joined = attach_captions(load_samples(labels_csv), read_captions(str(out)))
    assert all(s.caption for s in joined)


def test_cmssa_preset_instructblip_cli_resumes_and_skips_bad_images(tiny_instructblip, labels_csv, tmp_path, capsys):
    out = tmp_path / "caps.csv"
    args = ["--data", labels_csv, "--out", str(out), "--model", tiny_instructblip, "--device", "cpu",
            "--batch-size", "8", "--max-new-tokens", "4"]
    cap = Captioner(tiny_instructblip, "cmssa", "cpu")
    assert cap.family == "instructblip" and "mood" in cap.prompts()[0] and cap.max_new_tokens == 60
    # an interrupted run: the first batches written, the last row torn mid-write
    assert main(args) == 0
    rows = _rows(out)
    assert len(rows) == 32 and all(r["caption"] for r in rows)
    text = out.read_text().splitlines(keepends=True)
    out.write_text("".join(text[:17]) + text[17][:7])  # header + 16 rows + a partial row
    assert len(read_done(str(out))) == 16 and out.read_text().endswith("\n")
    # a broken image and a changed image are picked up on the rerun; done images are skipped
    base = os.path.dirname(labels_csv)
    with open(os.path.join(base, rows[0]["image"]), "ab") as f:
        f.write(b"\0")  # new bytes -> new hash -> captioned again
    bad = rows[20]["image"]
    with open(os.path.join(base, bad), "wb") as f:
        f.write(b"not an image")
    capsys.readouterr()
    assert main(args) == 1  # some image failed
    err = capsys.readouterr().err
    assert bad in err and "skipped" in err
    rows2 = _rows(out)
    keys = [r["image"] for r in rows2]
    assert len(rows2) == 16 + 15 + 1 and bad not in keys[16:]  # 16 kept, 15 resumed, 1 recaptioned
    assert keys.count(rows[0]["image"]) == 2
    assert main(args) == 1 and len(_rows(out)) == len(rows2)  # nothing left but the bad image


def test_plain_image_folder_and_bad_output_file(tiny_blip, tmp_path):
    from tests.images import textured

    (tmp_path / "imgs" / "sub").mkdir(parents=True)
    textured(48, 48, level=0.3).save(tmp_path / "imgs" / "a.png")
    textured(48, 48, level=0.7).save(tmp_path / "imgs" / "sub" / "b.jpg")
    out = tmp_path / "caps.csv"
    assert main(["--data", str(tmp_path / "imgs"), "--out", str(out), "--model", tiny_blip, "--preset", "d2s",
                 "--device", "cpu", "--max-new-tokens", "2"]) == 0
    assert [r["image"] for r in _rows(out)] == ["a.png", "sub/b.jpg"]
    (tmp_path / "other.csv").write_text("x,y\n1,2\n")
    assert main(["--data", str(tmp_path / "imgs"), "--out", str(tmp_path / "other.csv"), "--model", tiny_blip,
                 "--device", "cpu"]) == 2
