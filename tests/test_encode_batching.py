"""How encoding batches items: texts of similar token counts together, largest first, with the
results handed back in the input order."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from torch import nn

from finetuner.encoding import encode_items
from finetuner.errors import PluginError
from finetuner.models import Preprocessor
from finetuner.models.backbones.text import TextPreprocessor


def word_tokenizer_json() -> str:
    """A whitespace word tokenizer: one token per known word, [UNK] for any other word."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {"[PAD]": 0, "[UNK]": 1, **{w: i + 2 for i, w in enumerate("abcdefgh")}}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    return tokenizer.to_str()


class RecordingEncoder(nn.Module):
    """Embeds a tokenized batch as (number of real tokens, sum of token ids) and records the
    padded width of every batch it is given."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))
        self.widths: list[int] = []

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        mask = batch["attention_mask"]
        self.widths.append(int(mask.shape[1]))
        real = mask.sum(dim=1).float()
        ids = (batch["input_ids"] * mask).sum(dim=1).float()
        return torch.stack([real, ids], dim=1) * self.scale


def test_text_sizes_are_token_counts_after_truncation():
    pre = TextPreprocessor(word_tokenizer_json(), max_length=5)
    texts = ["a b c", "a", "abcdefghabcdefgh", " ".join("abcdefgh")]
    # the long single word is one unknown token; eight words are truncated to five
    assert pre.sizes(texts) == [3, 1, 1, 5]
    assert pre.sizes(torch.zeros(2, 3)) is None
    # the preprocessor still pads after sizes() ran, and still pickles without its tokenizers
    copy = pickle.loads(pickle.dumps(pre))
    assert copy(["a b", "a"])["attention_mask"].tolist() == [[1, 1], [1, 0]]


def test_texts_are_batched_by_token_count_and_returned_in_input_order():
    pre = TextPreprocessor(word_tokenizer_json(), max_length=32)
    # by characters the long unknown word comes first; by tokens it is the shortest text
    texts = ["abcdefghabcdefgh", "a b c d", "h", "a b", "c d e"]
    module = RecordingEncoder()
    vectors = encode_items(module, pre, texts, batch_size=2)
    # token counts 1, 4, 1, 2, 3: batches (4, 3), (2, 1), (1)
    assert module.widths == [4, 2, 1]
    expected = np.concatenate([encode_items(module, pre, [t], batch_size=1) for t in texts])
    np.testing.assert_array_equal(vectors, expected)
    assert vectors[:, 0].tolist() == [1, 4, 1, 2, 3]


def test_fewer_padded_tokens_than_sorting_by_characters():
    pre = TextPreprocessor(word_tokenizer_json(), max_length=64)
    rng = np.random.default_rng(0)
    words = [*"abcdefgh", "unknownword" * 3]
    texts = [" ".join(rng.choice(words, size=rng.integers(1, 30))) for _ in range(200)]
    module = RecordingEncoder()
    encode_items(module, pre, texts, batch_size=16)
    by_tokens = sum(w * 16 for w in module.widths)
    counts = np.asarray(pre.sizes(texts))
    by_chars = np.argsort([-len(t) for t in texts], kind="stable")
    widths_by_chars = [counts[by_chars[i : i + 16]].max() for i in range(0, len(texts), 16)]
    assert by_tokens < sum(w * 16 for w in widths_by_chars)


class SeenInOrder(nn.Module):
    """Returns its input, and records the first column of each row in the order it came."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))
        self.seen: list[float] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.extend(x[:, 0].tolist())
        return x


def test_items_without_sizes_keep_their_order():
    module = SeenInOrder()
    data = torch.arange(10, dtype=torch.float32).reshape(5, 2)
    assert Preprocessor().sizes(data) is None
    out = encode_items(module, Preprocessor(), data, batch_size=2)
    assert module.seen == [0.0, 2.0, 4.0, 6.0, 8.0]
    np.testing.assert_array_equal(out, data.numpy())


def test_a_text_preprocessor_without_its_own_sizes_sorts_by_characters():
    class Lengths(Preprocessor):
        modality = "text"

        def __call__(self, values):
            return torch.tensor([[float(len(v))] for v in values])

    module = SeenInOrder()
    texts = ["ab", "abcd", "a", "abc"]
    assert Lengths().sizes(texts) == [2, 4, 1, 3]
    out = encode_items(module, Lengths(), texts, batch_size=2)
    assert module.seen == [4.0, 3.0, 2.0, 1.0]
    assert out[:, 0].tolist() == [2.0, 4.0, 1.0, 3.0]


class BrokenSizes(Preprocessor):
    modality = "text"

    def __init__(self, sizes) -> None:
        self._sizes = sizes

    def __call__(self, values):
        return torch.tensor([[float(len(v))] for v in values])

    def sizes(self, values):
        return self._sizes


@pytest.mark.parametrize(
    ("sizes", "message"),
    [
        ([3, 1], r"BrokenSizes\.sizes\(\) must return one finite number per item; for 3 items"),
        ([[1, 2, 3]], r"for 3 items it returned shape \(1, 3\)"),
        (["long", "short", "x"], r"BrokenSizes\.sizes\(\) must return one number per item"),
        ([1.0, float("nan"), 2.0], r"with NaN or infinity\. Return None to keep the items"),
    ],
)
def test_a_preprocessor_whose_sizes_do_not_fit_its_items_is_named(sizes, message):
    with pytest.raises(PluginError, match=message):
        encode_items(SeenInOrder(), BrokenSizes(sizes), ["ab", "abcd", "a"], batch_size=2)
