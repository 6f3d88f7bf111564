"""Text encoder loading: PixArt layout (T5) and any encoder exposing last_hidden_state."""

from __future__ import annotations

import pytest
import torch
from conftest import CAPTIONS
from transformers import AutoTokenizer, BertConfig, BertModel, BertTokenizer, T5EncoderModel

from easyanimate.models.text_encoder import DEFAULT_MAX_LENGTH, build_caption_tokenizer, load_text_encoder


def test_t5_pixart_layout_loads_and_matches_direct_use(text_encoder_dir):
    encoder = load_text_encoder(text_encoder_dir, max_length=24)
    assert type(encoder.model) is T5EncoderModel  # not the encoder-decoder T5Model
    prompts = [CAPTIONS[0], ""]
    features, mask = encoder(prompts)
    assert features.shape == (2, 24, encoder.hidden_size) and mask.shape == (2, 24)
    assert mask[1].sum() == 1  # an empty prompt is just </s>
    # the same numbers as transformers used by hand
    tok = AutoTokenizer.from_pretrained(f"{text_encoder_dir}/tokenizer")
    model = T5EncoderModel.from_pretrained(f"{text_encoder_dir}/text_encoder").eval()
    ids = tok(prompts, padding="max_length", max_length=24, truncation=True, return_tensors="pt")
    with torch.no_grad():
        ref = model(input_ids=ids.input_ids, attention_mask=ids.attention_mask).last_hidden_state
    assert torch.equal(features, ref)
    assert not any(p.requires_grad for p in encoder.parameters())  # frozen


def test_tokenizer_keeps_words_apart(text_encoder_dir):
    encoder = load_text_encoder(text_encoder_dir)
    assert encoder.max_length == DEFAULT_MAX_LENGTH == 120
    ids_red = encoder.tokenizer("a red circle").input_ids
    ids_blue = encoder.tokenizer("a blue circle").input_ids
    unk = encoder.tokenizer.unk_token_id
    assert ids_red != ids_blue and unk not in ids_red + ids_blue


def test_caption_tokenizer_is_word_level_and_reloads(tmp_path):
    # one piece per caption word (a letter-level split made colours hard to read through a frozen random
    # encoder); unseen words still tokenize, letter by letter, without <unk>
    tok = build_caption_tokenizer(["a red circle on a gray background", "a blue square moving left"] * 3)
    assert tok.tokenize("a red circle moving left") == [
        "\u2581a",
        "\u2581red",
        "\u2581circle",
        "\u2581moving",
        "\u2581left",
    ]
    unseen = tok("a pink hexagon").input_ids
    assert tok.unk_token_id not in unseen and len(unseen) > 4
    tok.save_pretrained(str(tmp_path))
    again = AutoTokenizer.from_pretrained(str(tmp_path))
    assert again("a blue square").input_ids == tok("a blue square").input_ids


def test_bert_like_encoder_works(tmp_path):
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "red", "blue", "circle", "square"]
    tok = BertTokenizer(vocab={w: i for i, w in enumerate(words)})
    torch.manual_seed(0)
    cfg = BertConfig(
        vocab_size=len(words),
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
    )
    BertModel(cfg).save_pretrained(tmp_path / "enc")
    tok.save_pretrained(tmp_path / "enc")
    encoder = load_text_encoder(str(tmp_path / "enc"), max_length=8)
    features, mask = encoder(["a red circle", "a blue square"])
    assert features.shape == (2, 8, 16) and mask.sum(1).tolist() == [5, 5]
    assert tok.unk_token_id not in tok("a red circle a blue square").input_ids
    assert not torch.allclose(features[0], features[1])


def test_missing_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="text encoder folder"):
        load_text_encoder(str(tmp_path / "absent"))
