"""Vocabulary pruning for one task, as PaddleNLP's ernie-tiny compresses its deployed models:
keep the tokens that occur in the task's train split, the special tokens and, optionally, the
first ``Export.keep_frequent`` ids of ``vocab.txt`` (vocabularies built by
``ernie_tiny.tokenization.build_vocab`` list the specials, then tokens by corpus frequency);
the word embedding keeps those rows, ``vocab.txt`` those lines, in their old order.

A token outside the kept set is not in the new ``vocab.txt``, so the tokenizer reads it as
``[UNK]``. WordPiece picks the longest match first, and the kept vocabulary is a subset of the
old one, so a text whose tokens were all kept is tokenized exactly as before and gets exactly
the unpruned model's prediction: ``check`` verifies that on the dev split and reports the
task metric of both models on the whole dev split next to each other.
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import List, Sequence

import numpy as np


def kept_ids(token_ids: Sequence[Sequence[int]], special_ids: Sequence[int], keep_frequent: int,
             vocab_size: int) -> List[int]:
    """Old ids to keep, ascending: the specials, the first ``keep_frequent`` ids, and every id seen."""
    keep = set(int(i) for i in special_ids) | set(range(min(keep_frequent, vocab_size)))
    for ids in token_ids:
        keep.update(int(i) for i in ids)
    return sorted(i for i in keep if 0 <= i < vocab_size)


def pruned_tokenizer(tokenizer, keep: Sequence[int], directory: Path):
    """The same tokenizer (its saved config) over the kept lines of ``vocab.txt``."""
    from paddlenlp.transformers import AutoTokenizer

    tokenizer.save_pretrained(str(directory))
    vocab = directory / "vocab.txt"
    tokens = [tokenizer.convert_ids_to_tokens(int(i)) for i in keep]
    vocab.write_text("\n".join(tokens) + "\n", encoding="utf-8")
    pruned = AutoTokenizer.from_pretrained(str(directory))
    if len(pruned) != len(keep):
        raise ValueError(f"pruned vocab.txt: {len(keep)} tokens written, the tokenizer reads {len(pruned)} "
                         "(duplicate tokens in the original vocabulary?)")
    return pruned


def prune_model(model, keep: Sequence[int], new_pad_id: int):
    """A copy of ``model`` whose word embedding holds only the ``keep`` rows (new id = position in ``keep``)."""
    import paddle

    pruned = copy.deepcopy(model)
    base = getattr(pruned, pruned.base_model_prefix)
    old = base.embeddings.word_embeddings
    weight = old.weight.numpy()[np.asarray(keep)]
    embedding = paddle.nn.Embedding(len(keep), weight.shape[1], padding_idx=new_pad_id)
    embedding.weight.set_value(weight)
    base.embeddings.word_embeddings = embedding
    base.pad_token_id = new_pad_id  # the graph masks padding by this id
    pruned.config.vocab_size = len(keep)
    pruned.config.pad_token_id = new_pad_id
    pruned.eval()
    return pruned


def parameter_mb(model) -> float:
    return round(sum(int(np.prod(p.shape)) * 4 for p in model.parameters()) / 2**20, 3)


def check(model, pruned, tokenizer, new_tokenizer, keep: Sequence[int], examples, card, labels, max_length: int,
          head: str) -> dict:
    """Dev predictions of both models: identical on every example whose tokens were all kept
    (a ``ValueError`` otherwise), and each model's metric on all of them."""
    from ernie_tiny.finetune.loop import predict
    from ernie_tiny.tasks.encode import IGNORE, encode
    from ernie_tiny.tasks.metrics import score

    old_features = encode(examples, tokenizer, max_length, head)
    new_features = encode(examples, new_tokenizer, max_length, head)
    old_pred, gold = predict(model, old_features, 32, tokenizer.pad_token_id)
    new_pred, _ = predict(pruned, new_features, 32, new_tokenizer.pad_token_id)
    kept = set(keep)
    covered = np.array([all(i in kept for i in f.input_ids) for f in old_features])
    if head == "token":
        real = gold != IGNORE
        same = np.array([(o[r] == n[r]).all() for o, n, r in zip(old_pred, new_pred, real)])
    else:
        same = old_pred == new_pred
    if not same[covered].all():
        raise ValueError(f"vocabulary pruning changed {int((~same[covered]).sum())} predictions on dev texts whose "
                         "tokens were all kept")
    return {"dev_examples": len(examples), "all_tokens_kept": int(covered.sum()),
            "identical_where_all_kept": True, "identical_overall": round(float(same.mean()), 6),
            "metric": card.metric, "unpruned": round(float(score(card.metric, old_pred, gold, labels)), 4),
            "pruned": round(float(score(card.metric, new_pred, gold, labels)), 4)}


def prune_for_task(model, tokenizer, card, task: dict, ex, directory: Path):
    """(pruned model, its tokenizer, the record for ``deploy.json``): vocabulary from the task's
    train split, checked on its dev split (``Export.eval_examples`` of it; 0 = all). The pruned
    tokenizer's files go to ``directory``, which must live until the tokenizer is saved (PaddleNLP
    copies ``vocab.txt`` from there)."""
    from ernie_tiny.tasks.data import Sample, TaskData, read_task_split

    sample = Sample(max_dev_examples=ex.eval_examples, max_length=task["max_length"])
    train = read_task_split(card, "train", sample, ex.data_dir, labels=task["labels"])
    train_ids = [f.input_ids for f in TaskData.encoded(train, sample, tokenizer)]
    keep = kept_ids(train_ids, tokenizer.all_special_ids, ex.keep_frequent, len(tokenizer))
    new_tokenizer = pruned_tokenizer(tokenizer, keep, directory)
    pruned = prune_model(model, keep, new_tokenizer.pad_token_id)
    dev = read_task_split(card, "dev", sample, ex.data_dir, labels=task["labels"])  # raw: both tokenizers encode it
    record = {"vocab_before": model.config.vocab_size, "tokenizer_before": len(tokenizer), "vocab_after": len(keep),
              "train_examples": len(train.examples),
              "keep_frequent": ex.keep_frequent, "params_mb_before": parameter_mb(model),
              "params_mb_after": parameter_mb(pruned),
              **check(model, pruned, tokenizer, new_tokenizer, keep, dev.examples, card, task["labels"],
                      task["max_length"], task["head"])}
    print(f"vocabulary pruned {record['vocab_before']} -> {record['vocab_after']} embedding rows (the tokenizer's "
          f"{record['tokenizer_before']} tokens -> {record['vocab_after']}), parameters "
          f"{record['params_mb_before']} -> {record['params_mb_after']} MB; dev {card.metric} {record['pruned']:.2f} "
          f"vs unpruned {record['unpruned']:.2f}; identical on the {record['all_tokens_kept']}/{len(dev.examples)} "
          f"texts whose tokens were all kept", flush=True)
    return pruned, new_tokenizer, record
