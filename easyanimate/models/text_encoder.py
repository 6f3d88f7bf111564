"""Text encoder: a transformers encoder + tokenizer loaded from a local folder.

PixArt uses T5-XXL (`T5EncoderModel`, 120 tokens); any transformers encoder whose output has
`last_hidden_state` works (T5, CLIP text, BERT-like). Also builds a tiny caption tokenizer offline
(a word-level vocabulary from the captions) for tests and the CPU demo model.
"""

from __future__ import annotations

import math
import os
import string
from collections import Counter
from collections.abc import Iterable, Sequence

import torch
import transformers
from torch import nn
from transformers import AutoConfig, AutoModel, AutoTokenizer, PreTrainedTokenizerBase

from .devices import execution_device

DEFAULT_MAX_LENGTH = 120  # PixArt-alpha's caption length


TOKENIZER_FILES = ("tokenizer_config.json", "tokenizer.json", "spiece.model", "vocab.json")


def _subfolder(path: str, name: str) -> str:
    sub = os.path.join(path, name)
    return sub if os.path.isdir(sub) else path


def _encoder_class(folder: str):
    """The class named in the folder's config (e.g. T5EncoderModel), so T5 loads without a decoder."""
    config = AutoConfig.from_pretrained(folder, local_files_only=True)
    for arch in config.architectures or []:
        cls = getattr(transformers, arch, None)
        if cls is not None:
            return cls
    return AutoModel


class TextEncoder(nn.Module):
    """Tokenize and encode prompts into `(features (B, L, D), mask (B, L))`, padded to `max_length`.

    Wrapping changes nothing of the model (mode, `requires_grad`): the pipeline wraps its encoder for every
    prompt, also while training runs with that encoder. `load_text_encoder` freezes what it loads.
    """

    def __init__(
        self, model: nn.Module, tokenizer: PreTrainedTokenizerBase, max_length: int = DEFAULT_MAX_LENGTH
    ):
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        self.max_length = max_length

    @property
    def hidden_size(self) -> int:
        return (
            self.model.config.hidden_size
            if hasattr(self.model.config, "hidden_size")
            else self.model.config.d_model
        )

    def tokenize(self, prompts: str | Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Token ids and attention mask `(B, max_length)` on the encoder's device."""
        if isinstance(prompts, str):
            prompts = [prompts]
        tokens = self.tokenizer(
            list(prompts),
            padding="max_length",
            max_length=self.max_length,
            truncation=True,
            return_tensors="pt",
        )
        device = execution_device(
            self.model
        )  # offload hooks may keep the weights on CPU or meta until the call
        return tokens.input_ids.to(device), tokens.attention_mask.to(device)

    @torch.no_grad()
    def forward(self, prompts: str | Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        ids, mask = self.tokenize(prompts)
        return self.model(input_ids=ids, attention_mask=mask).last_hidden_state, mask

    encode = forward


def load_text_encoder(
    path: str,
    max_length: int = DEFAULT_MAX_LENGTH,
    dtype: torch.dtype | None = None,
    device: str | torch.device = "cpu",
) -> TextEncoder:
    """Load from `path` holding either `text_encoder/` + `tokenizer/` (PixArt layout) or both in one folder."""
    if not os.path.isdir(path):
        raise FileNotFoundError(f"text encoder folder not found: {path}")
    enc_dir = _subfolder(path, "text_encoder")
    tok_dir = _subfolder(path, "tokenizer")
    if enc_dir != path and tok_dir == path:
        raise FileNotFoundError(
            f"{path} has text_encoder/ but no tokenizer/: prompts cannot be read without it"
        )
    if not any(os.path.isfile(os.path.join(tok_dir, f)) for f in TOKENIZER_FILES):
        raise FileNotFoundError(f"no tokenizer in {tok_dir} (none of {', '.join(TOKENIZER_FILES)})")
    tokenizer = AutoTokenizer.from_pretrained(tok_dir, local_files_only=True)
    kwargs = {"local_files_only": True}
    if dtype is not None:
        kwargs["dtype"] = dtype
    model = _encoder_class(enc_dir).from_pretrained(enc_dir, **kwargs).to(device)
    model.eval().requires_grad_(False)  # frozen unless a run opts in (train_text_encoder)
    return TextEncoder(model, tokenizer, max_length=max_length)


def build_caption_tokenizer(captions: Iterable[str], vocab_size: int = 256):
    """A word-level T5 (unigram) tokenizer built offline from captions, for the tiny test and demo encoders.

    Every caption word (the `vocab_size` most frequent) is one piece scored by its log frequency; single
    characters follow with far lower scores, so unseen words still tokenize (letter by letter) and whole
    words always win. A sentencepiece model trained on a few hundred short captions splits even "red" into
    letters, and a frozen random encoder then barely tells the colours apart. Ids follow T5: pad 0, eos 1,
    unk 2.
    """
    from transformers import T5Tokenizer

    words = Counter(w for c in captions for w in c.lower().split())
    if not words:
        raise ValueError("no caption words to build a tokenizer from")
    total = sum(words.values())
    specials = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    pieces = [("\u2581" + w, math.log(n / total)) for w, n in words.most_common(vocab_size)]
    chars = sorted({ch for w in words for ch in w} | set(string.ascii_lowercase + string.digits))
    fallback = [("\u2581", -50.0)] + [(ch, -60.0) for ch in chars if ch != "\u2581"]
    return T5Tokenizer(vocab=specials + pieces + fallback, extra_ids=0)


def build_tiny_t5_encoder(
    tokenizer: PreTrainedTokenizerBase, d_model: int = 32, num_layers: int = 2, seed: int = 0
):
    """A randomly initialised small T5 encoder matching a tokenizer (tests, demo)."""
    from transformers import T5Config, T5EncoderModel

    config = T5Config(
        vocab_size=len(tokenizer),
        d_model=d_model,
        d_kv=d_model // 4,
        d_ff=d_model * 2,
        num_layers=num_layers,
        num_heads=4,
        relative_attention_num_buckets=8,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.pad_token_id,
        dropout_rate=0.0,
    )
    torch.manual_seed(seed)
    return T5EncoderModel(config).eval()
