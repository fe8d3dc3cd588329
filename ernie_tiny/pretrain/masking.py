"""BERT's masked-LM rule on a batch of token ids (NumPy, no Paddle).

Every non-special token is chosen with probability ``mask_prob`` (independently); of the
chosen tokens, ``mask_token_prob`` become [MASK], ``random_token_prob`` become a random
non-special token, and the rest stay as they are (the 80/10/10 rule). ``labels`` holds the
original id at the chosen positions and -100 elsewhere, the convention of PaddleNLP's
``ErnieForMaskedLM(labels=...)`` and of ``paddle.nn.CrossEntropyLoss``'s ignore index.
Special tokens ([CLS], [SEP], [PAD], [MASK], [UNK]) are never chosen.

Which tokens are chosen comes from the ``numpy.random.Generator`` passed in; the recipe derives
it from (seed, rank, position in the data order), so a resumed run masks exactly as an
uninterrupted one, and each epoch masks a sequence afresh (dynamic masking).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence, Tuple

import numpy as np

IGNORE_INDEX = -100


@dataclass
class Masker:
    mask_token_id: int
    vocab_size: int                   # random replacements are drawn from [0, vocab_size)
    special_ids: Tuple[int, ...]      # never chosen, never drawn as a random replacement
    mask_prob: float = 0.15
    mask_token_prob: float = 0.8
    random_token_prob: float = 0.1
    _ordinary: np.ndarray = field(init=False, repr=False)  # the ids a random replacement is drawn from

    @classmethod
    def for_tokenizer(cls, tokenizer, mlm) -> "Masker":
        """From a PaddleNLP tokenizer and the ``Mlm`` config section."""
        specials = sorted(set(tokenizer.all_special_ids))
        return cls(tokenizer.mask_token_id, len(tokenizer), tuple(specials),
                   mlm.mask_prob, mlm.mask_token_prob, mlm.random_token_prob)

    def __post_init__(self):
        ordinary = np.setdiff1d(np.arange(self.vocab_size), np.asarray(self.special_ids, dtype=np.int64))
        if len(ordinary) == 0:
            raise ValueError("the vocabulary has no ordinary token to mask")
        self._ordinary = ordinary

    def __call__(self, ids: np.ndarray, rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray]:
        """``ids`` [batch, seq] -> (masked input ids, labels), both int64 of the same shape."""
        ids = np.asarray(ids, dtype=np.int64)
        candidate = ~np.isin(ids, self.special_ids)
        chosen = candidate & (rng.random(ids.shape) < self.mask_prob)
        if not chosen.any() and candidate.any():  # a batch always has something to predict
            chosen.flat[rng.choice(np.flatnonzero(candidate))] = True
        labels = np.where(chosen, ids, IGNORE_INDEX)
        action = rng.random(ids.shape)
        to_mask = chosen & (action < self.mask_token_prob)
        to_random = chosen & (action >= self.mask_token_prob) & (action < self.mask_token_prob + self.random_token_prob)
        inputs = ids.copy()
        inputs[to_mask] = self.mask_token_id
        inputs[to_random] = self._ordinary[rng.integers(0, len(self._ordinary), int(to_random.sum()))]
        return inputs, labels


def batch_rng(seed: int, rank: int, data_position: Sequence[int]) -> np.random.Generator:
    """The generator for one batch: a pure function of the run's seed, the rank and the batch's
    place in the data order (epoch, batch index), so no generator state needs checkpointing."""
    return np.random.default_rng([seed, 0x4D4C4D, rank, *data_position])  # 0x4D4C4D: "MLM", its own stream
