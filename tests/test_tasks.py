"""The task layer: cards validate (errors name file:line:key), readers turn benchmark files into
checked examples (errors name file:line and the field), encoding aligns token labels with
sub-words, collate pads, and the metrics agree with values computed by hand."""
import json
from pathlib import Path

import numpy as np
import pytest

from ernie_tiny.config import ConfigError
from ernie_tiny.tasks.card import TASKS_DIR, TaskCard, all_cards, load_card
from ernie_tiny.tasks.encode import IGNORE, Features, collate, encode, encode_sequence, encode_tokens
from ernie_tiny.tasks.metrics import score
from ernie_tiny.tasks.offline import BUILDERS
from ernie_tiny.tasks.readers import Example, TaskDataError, read_split


def line_of(text: str, needle: str) -> int:
    hits = [i for i, line in enumerate(text.splitlines(), 1) if needle in line]
    assert len(hits) == 1, (needle, hits)
    return hits[0]


def write_jsonl(path: Path, records) -> Path:
    """Records (dicts, or raw strings written as they are) one a line."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [r if isinstance(r, str) else json.dumps(r, ensure_ascii=False) for r in records]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def data_error(*args, **kwargs) -> str:
    with pytest.raises(TaskDataError) as info:
        read_split(*args, **kwargs)
    return str(info.value)


# ---- cards ----

CARDS = all_cards()


def test_cards_are_found_in_every_group():
    assert {p.parent.name for p in CARDS} == {"clue", "fewclue", "mtl", "offline", "ood"}
    assert len(CARDS) >= 20


@pytest.mark.parametrize("path", CARDS, ids=[p.stem for p in CARDS])
def test_every_card_validates(path):
    card = load_card(str(path))
    assert isinstance(card, TaskCard)
    assert card.name == path.stem, "a card is found by its name: the file name must be the card name"
    assert card.group == path.parent.name
    if card.label.values != "infer":
        assert len(card.label.values) >= 2 and len(set(card.label.values)) == len(card.label.values)
        assert not set(card.label.skip) & set(card.label.values)
    if card.source.builtin:
        assert card.source.builtin.name in BUILDERS
    else:
        assert card.source.download, "a card whose data must be fetched says how"
    if card.metric == "entity_f1":
        assert all(v == "O" or v[:2] in ("B-", "I-") for v in card.label.values)


def test_cards_by_name_and_by_group_path():
    assert load_card("afqmc") == load_card("clue/afqmc") == load_card(str(TASKS_DIR / "clue/afqmc.yaml"))
    with pytest.raises(FileNotFoundError, match="no_such_task"):
        load_card("no_such_task")


GOOD_CARD = """\
name: mytask
source:
  local:
    format: jsonl
input:
  type: single
  text: sentence
label:
  field: label
  values: ["0", "1"]
head: sequence
metric: accuracy
max_length: 64
"""


def card_error(tmp_path: Path, text: str) -> str:
    path = tmp_path / "mytask.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_card(str(path))
    return str(info.value)


def test_a_hand_written_card_loads(tmp_path):
    path = tmp_path / "mytask.yaml"
    path.write_text(GOOD_CARD, encoding="utf-8")
    card = load_card(str(path))
    assert card.max_length == 64 and card.source.local.splits == {"train": "train.json", "dev": "dev.json"}


def test_card_unknown_key_names_file_line_key(tmp_path):
    text = GOOD_CARD.replace("  text: sentence\n", "  text: sentence\n  txet_pair: x\n")
    message = card_error(tmp_path, text)
    assert f"mytask.yaml:{line_of(text, 'txet_pair')}: input.txet_pair" in message
    assert "unknown key" in message


def test_card_wrong_type_names_file_line_key(tmp_path):
    text = GOOD_CARD.replace("max_length: 64", "max_length: long")
    message = card_error(tmp_path, text)
    assert f"mytask.yaml:{line_of(text, 'max_length')}: max_length" in message
    # label values are text: an unquoted 0 is an int, which the strict schema refuses
    text = GOOD_CARD.replace('values: ["0", "1"]', "values: [0, 1]")
    message = card_error(tmp_path, text)
    assert f"mytask.yaml:{line_of(text, 'values')}: label.values" in message


def test_card_token_head_needs_token_input(tmp_path):
    text = GOOD_CARD.replace("head: sequence", "head: token")
    message = card_error(tmp_path, text)
    assert f"mytask.yaml:{line_of(text, 'head:')}: head: a token head needs input.type 'tokens'" in message


def test_card_cross_checks(tmp_path):
    text = GOOD_CARD.replace("metric: accuracy", "metric: entity_f1")
    assert f"mytask.yaml:{line_of(text, 'metric')}: metric: entity_f1 is for token heads" in card_error(tmp_path, text)
    text = GOOD_CARD.replace("type: single", "type: pair")
    assert f"mytask.yaml:{line_of(text, 'input:')}: input.text_pair: a 'pair' input needs text_pair" \
        in card_error(tmp_path, text)
    text = GOOD_CARD.replace("  local:\n    format: jsonl\n", "  download: by hand\n")
    assert f"mytask.yaml:{line_of(text, 'source:')}: source: a card needs at least one of paddlenlp, local, builtin" \
        in card_error(tmp_path, text)


# ---- readers: local jsonl in the benchmarks' own format ----

def test_pair_task(tmp_path):
    card = load_card("afqmc")
    write_jsonl(tmp_path / "afqmc/train.json", [
        {"sentence1": "花呗怎么还款", "sentence2": "花呗如何还钱", "label": "1"},
        {"sentence1": "借呗额度", "sentence2": "花呗账单", "label": 0},  # ints as PaddleNLP gives them
    ])
    split = read_split(card, "train", data_dir=str(tmp_path))
    assert split.labels == ["0", "1"] and split.skipped == 0
    assert [(e.text, e.text_pair, e.label) for e in split.examples] == [
        ("花呗怎么还款", "花呗如何还钱", 1), ("借呗额度", "花呗账单", 0)]
    assert split.examples[1].where == f"{tmp_path / 'afqmc/train.json'}:2"
    assert split.source == str(tmp_path / "afqmc/train.json")


def test_single_task(tmp_path):
    card = load_card("tnews")
    write_jsonl(tmp_path / "tnews/dev.json", [
        {"label": "102", "label_desc": "news_entertainment", "sentence": "江疏影甜甜圈自拍", "keywords": ""},
        "",  # blank lines are allowed
        {"label": "116", "label_desc": "news_game", "sentence": "新手玩家如何上分", "keywords": ""},
    ])
    split = read_split(card, "dev", data_dir=str(tmp_path))
    assert [(e.text, e.text_pair, e.label) for e in split.examples] == [
        ("江疏影甜甜圈自拍", None, card.label.values.index("102")), ("新手玩家如何上分", None, 14)]
    assert split.examples[1].where.endswith("dev.json:3")


def test_ocnli_dash_rows_are_skipped_and_counted(tmp_path):
    card = load_card("ocnli")
    write_jsonl(tmp_path / "ocnli/train.50k.json", [
        {"sentence1": "a", "sentence2": "b", "label": "entailment"},
        {"sentence1": "c", "sentence2": "d", "label": "-"},
        {"sentence1": "e", "sentence2": "f", "label": "contradiction"},
        {"sentence1": "g", "sentence2": "h", "label": "-"},
    ])
    split = read_split(card, "train", data_dir=str(tmp_path))
    assert split.skipped == 2
    assert [(e.text, e.label) for e in split.examples] == [("a", 0), ("e", 2)]


def test_label_outside_the_list_names_file_line_field(tmp_path):
    path = write_jsonl(tmp_path / "afqmc/dev.json", [
        {"sentence1": "a", "sentence2": "b", "label": "1"},
        {"sentence1": "a", "sentence2": "b", "label": "2"},
    ])
    message = data_error(load_card("afqmc"), "dev", data_dir=str(tmp_path))
    assert message.startswith(f"{path}:2: field 'label' = '2' is not one of the labels")


def test_missing_field_names_file_line_field(tmp_path):
    path = write_jsonl(tmp_path / "afqmc/dev.json", [
        {"sentence1": "a", "sentence2": "b", "label": "1"},
        {"sentence1": "a", "sentence2": "b", "label": "0"},
        {"sentence1": "a", "label": "0"},
    ])
    assert data_error(load_card("afqmc"), "dev", data_dir=str(tmp_path)) == f"{path}:3: field 'sentence2' is missing"
    write_jsonl(path, [{"sentence1": "a", "sentence2": "b"}])
    assert data_error(load_card("afqmc"), "dev", data_dir=str(tmp_path)) == f"{path}:1: field 'label' is missing"
    write_jsonl(path, [{"sentence1": "a", "sentence2": 3, "label": "0"}])
    assert data_error(load_card("afqmc"), "dev", data_dir=str(tmp_path)) == \
        f"{path}:1: field 'sentence2' must be text, not int"


def test_malformed_json_names_file_line(tmp_path):
    path = write_jsonl(tmp_path / "afqmc/dev.json", [
        {"sentence1": "a", "sentence2": "b", "label": "1"},
        '{"sentence1": "a", "sentence2": "b", "label": "1"',
    ])
    assert data_error(load_card("afqmc"), "dev", data_dir=str(tmp_path)).startswith(f"{path}:2: not a JSON line")
    write_jsonl(path, ['["a", "b"]'])
    assert data_error(load_card("afqmc"), "dev", data_dir=str(tmp_path)) == f"{path}:1: a JSON line must be an object"


def test_missing_file_and_missing_data_dir_say_how_to_get_the_data(tmp_path):
    card = load_card("afqmc")
    message = data_error(card, "train", data_dir=str(tmp_path))
    assert str(tmp_path / "afqmc/train.json") in message and "afqmc_public.zip" in message
    assert "no 'test' split" in data_error(card, "test", data_dir=str(tmp_path))


def wsc(text, span1, index1, span2, index2, label="true"):
    return {"target": {"span2_index": index2, "span1_index": index1, "span1_text": span1, "span2_text": span2},
            "idx": 0, "label": label, "text": text}


def test_marked_spans(tmp_path):
    #       0 1 2 3 4 5 6 7 8 9 10 11 12 13
    text = "小明把书放在桌子上，它很重。"
    write_jsonl(tmp_path / "cluewsc2020/train.json", [
        wsc(text, "书", 3, "它", 10),
        wsc(text, "桌子", 6, "它", 10, label="false"),
        wsc("它说小明来了。", "小明", 2, "它", 0),  # the pronoun before the candidate
        {**wsc(text, "书", 3, "它", 10), "label": True},  # a bool label, as PaddleNLP gives it
    ])
    split = read_split(load_card("cluewsc2020"), "train", data_dir=str(tmp_path))
    assert [(e.text, e.text_pair, e.label) for e in split.examples] == [
        ("小明把_书_放在桌子上，[它]很重。", None, 0),
        ("小明把书放在_桌子_上，[它]很重。", None, 1),
        ("[它]说_小明_来了。", None, 0),
        ("小明把_书_放在桌子上，[它]很重。", None, 0),
    ]


def test_a_span_whose_text_is_not_at_its_offset_names_file_line_field(tmp_path):
    """PaddleNLP's benchmark asserts text[index:index + len(span)] == span for both CLUEWSC spans."""
    text = "小明把书放在桌子上，它很重。"
    path = write_jsonl(tmp_path / "cluewsc2020/dev.json", [wsc(text, "书", 3, "它", 10), wsc(text, "书", 4, "它", 10)])
    assert data_error(load_card("cluewsc2020"), "dev", data_dir=str(tmp_path)) == \
        f"{path}:2: field 'target.span1_text' = '书' is not the text at target.span1_index = 4, which reads '放'"
    write_jsonl(path, [wsc(text, "书", 3, "它们", 10)])
    assert data_error(load_card("cluewsc2020"), "dev", data_dir=str(tmp_path)) == \
        f"{path}:1: field 'target.span2_text' = '它们' is not the text at target.span2_index = 10, which reads '它很'"


def test_marked_span_outside_the_text_names_file_line_field(tmp_path):
    path = write_jsonl(tmp_path / "cluewsc2020/dev.json", [wsc("它很重。", "书", 4, "它", 0)])
    message = data_error(load_card("cluewsc2020"), "dev", data_dir=str(tmp_path))
    assert message == f"{path}:1: field 'target.span1_index' = 4 is not a position in the text"
    write_jsonl(path, [wsc("它很重。", "它", 0, "重。了", 2)])  # 3 characters from 2 run past the end
    message = data_error(load_card("cluewsc2020"), "dev", data_dir=str(tmp_path))
    assert message == f"{path}:1: field 'target.span2_index' = 2 is not a position in the text"
    write_jsonl(path, [{"target": {"span1_index": 0, "span1_text": "它"}, "label": "true", "text": "它"}])
    assert data_error(load_card("cluewsc2020"), "dev", data_dir=str(tmp_path)) == \
        f"{path}:1: field 'target.span2_index' is missing"


def test_csl_keywords_are_joined_with_spaces(tmp_path):
    """As PaddleNLP's CLUE benchmark (" ".join(keyword)): ERNIE's tokenizer drops the spaces, so the
    keywords cost no separator tokens of the 256."""
    write_jsonl(tmp_path / "csl/train.json", [
        {"id": 1, "abst": "本文研究了蒸馏。", "keyword": ["知识蒸馏", "预训练", "多任务"], "label": "1"}])
    (example,) = read_split(load_card("csl"), "train", data_dir=str(tmp_path)).examples
    assert (example.text, example.text_pair, example.label) == ("知识蒸馏 预训练 多任务", "本文研究了蒸馏。", 1)


def test_csldcp_labels_are_a_fixed_list_of_67():
    values = load_card("csldcp").label.values
    assert len(values) == 67 == len(set(values))
    assert {"材料科学与工程", "中国语言文学", "力学", "植物保护"} <= set(values)


def test_inferred_labels_come_from_train(tmp_path):
    card_path = tmp_path / "disciplines.yaml"
    card_path.write_text("name: disciplines\nsource:\n  local:\n    splits: {train: train.json, dev: dev.json}\n"
                         "input: {type: single, text: content}\nlabel: {values: infer}\n", encoding="utf-8")
    card = load_card(str(card_path))
    write_jsonl(tmp_path / "disciplines/train.json", [
        {"content": "x", "label": "材料科学与工程"}, {"content": "y", "label": "力学"},
        {"content": "z", "label": "材料科学与工程"}])
    write_jsonl(tmp_path / "disciplines/dev.json", [{"content": "w", "label": "力学"}, {"content": "v", "label": "化学"}])
    train = read_split(card, "train", data_dir=str(tmp_path))
    assert train.labels == sorted(["材料科学与工程", "力学"])
    assert [e.label for e in train.examples] == [train.labels.index(v) for v in ("材料科学与工程", "力学", "材料科学与工程")]
    message = data_error(card, "dev", data_dir=str(tmp_path), labels=train.labels)
    assert message.startswith(f"{tmp_path / 'disciplines/dev.json'}:2: field 'label' = '化学' is not one of")


def tsv_card(tmp_path: Path, header: bool):
    path = tmp_path / "pairs.yaml"
    path.write_text(
        "name: pairs\nsource:\n  local:\n    format: tsv\n    splits: {train: train.tsv}\n"
        f"    columns: [label, text_a, text_b]\n    header: {str(header).lower()}\n"
        "input: {type: pair, text: text_a, text_pair: text_b}\n"
        "label: {values: [different, same]}\n", encoding="utf-8")
    return load_card(str(path))


def test_tsv_with_columns(tmp_path):
    (tmp_path / "pairs").mkdir()
    path = tmp_path / "pairs/train.tsv"
    path.write_text("label\ttext_a\ttext_b\nsame\t今天 天气\t天气今天\ndifferent\t\"引号\t好\n", encoding="utf-8")
    split = read_split(tsv_card(tmp_path, header=True), "train", data_dir=str(tmp_path))
    assert [(e.text, e.text_pair, e.label, e.where) for e in split.examples] == [
        ("今天 天气", "天气今天", 1, f"{path}:2"), ('"引号', "好", 0, f"{path}:3")]
    # without `header`, the header row is data: its label is not in the list
    message = data_error(tsv_card(tmp_path, header=False), "train", data_dir=str(tmp_path))
    assert message.startswith(f"{path}:1: field 'label' = 'label' is not one of")
    path.write_text("label\ttext_a\ttext_b\nsame\tonly two\n", encoding="utf-8")
    message = data_error(tsv_card(tmp_path, header=True), "train", data_dir=str(tmp_path))
    assert message == f"{path}:2: 2 columns, the card names 3"


def test_token_task_from_local_files(tmp_path):
    path = tmp_path / "ner.yaml"
    path.write_text("name: ner\nsource: {local: {}}\ninput: {type: tokens, text: tokens}\n"
                    "label: {field: tags, values: [O, B-PER, I-PER]}\nhead: token\nmetric: entity_f1\n",
                    encoding="utf-8")
    card = load_card(str(path))
    data = write_jsonl(tmp_path / "ner/train.json", [
        {"tokens": ["江", "泽", "民", "说"], "tags": ["B-PER", "I-PER", "I-PER", "O"]},
        {"tokens": ["a", "b"], "tags": ["O"]}])
    message = data_error(card, "train", data_dir=str(tmp_path))
    assert message == f"{data}:2: fields 'tokens' and 'tags' must be lists of the same length"
    write_jsonl(data, [{"tokens": ["江", "泽", "民", "说"], "tags": ["B-PER", "I-PER", "I-PER", "O"]}])
    (example,) = read_split(card, "train", data_dir=str(tmp_path)).examples
    assert (example.text, example.label) == (["江", "泽", "民", "说"], [1, 2, 2, 0])


def test_local_only_card_without_data_dir(tmp_path):
    path = tmp_path / "mytask.yaml"
    path.write_text(GOOD_CARD.replace("source:\n", "source:\n  download: get it from the lab\n"), encoding="utf-8")
    message = data_error(load_card(str(path)), "train")
    assert "-o Data.dir=DIR" in message and "get it from the lab" in message


def test_max_examples_is_a_fixed_sample_across_the_split(tmp_path):
    card = load_card("afqmc")
    rows = [{"sentence1": f"s{i}", "sentence2": "t", "label": "0" if i < 50 else "1"} for i in range(100)]
    write_jsonl(tmp_path / "afqmc/train.json", rows)
    first = read_split(card, "train", data_dir=str(tmp_path), max_examples=10)
    again = read_split(card, "train", data_dir=str(tmp_path), max_examples=10)
    assert len(first.examples) == 10
    assert [e.where for e in first.examples] == [e.where for e in again.examples]  # deterministic
    assert {e.label for e in first.examples} == {0, 1}  # not just the first ten (all label 0)
    lines = [int(e.where.rsplit(":", 1)[1]) for e in first.examples]
    assert lines == sorted(lines) and len(set(lines)) == 10  # file order, no repeats
    assert [e.text for e in first.examples] == [rows[n - 1]["sentence1"] for n in lines]
    assert len(read_split(card, "train", data_dir=str(tmp_path), max_examples=1000).examples) == 100


def test_max_examples_counts_rows_after_skipping(tmp_path):
    rows = [{"sentence1": "a", "sentence2": "b", "label": "-" if i % 2 else "neutral"} for i in range(40)]
    write_jsonl(tmp_path / "ocnli/dev.json", rows)
    split = read_split(load_card("ocnli"), "dev", data_dir=str(tmp_path), max_examples=5)
    assert len(split.examples) == 5 and split.skipped == 20


# ---- encoding ----

@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    """A real ErnieTokenizer over a tiny vocabulary in which 'abc' is three word pieces."""
    from ernie_tiny.tokenization import SPECIAL_TOKENS, tokenizer_from_vocab

    path = tmp_path_factory.mktemp("vocab") / "vocab.txt"
    path.write_text("\n".join(SPECIAL_TOKENS + ["a", "##b", "##c", "中", "国", "人", "好"]) + "\n", encoding="utf-8")
    tok = tokenizer_from_vocab(path)
    assert tok.tokenize("abc") == ["a", "##b", "##c"] and tok.tokenize(" ") == []
    return tok


def ids(tokenizer, *tokens):
    return tokenizer.convert_tokens_to_ids(list(tokens))


def test_encode_sequence_pair(tokenizer):
    cls, sep = tokenizer.cls_token_id, tokenizer.sep_token_id
    f = encode_sequence(Example("中国", "人好", 1, "x:1"), tokenizer, max_length=32)
    assert f.input_ids == [cls, *ids(tokenizer, "中", "国"), sep, *ids(tokenizer, "人", "好"), sep]
    assert f.token_type_ids == [0, 0, 0, 0, 1, 1, 1]
    assert f.labels == 1
    single = encode_sequence(Example("中国abc", None, 0, "x:1"), tokenizer, max_length=32)
    assert single.input_ids == [cls, *ids(tokenizer, "中", "国", "a", "##b", "##c"), sep]
    assert set(single.token_type_ids) == {0}


def test_encode_sequence_truncates(tokenizer):
    f = encode_sequence(Example("中国人" * 10, "好" * 10, 0, "x:1"), tokenizer, max_length=12)
    assert len(f.input_ids) == len(f.token_type_ids) == 12
    assert f.input_ids[0] == tokenizer.cls_token_id and f.input_ids[-1] == tokenizer.sep_token_id
    assert f.input_ids.count(tokenizer.sep_token_id) == 2 and 1 in f.token_type_ids  # both texts kept
    single = encode_sequence(Example("中国人" * 10, None, 0, "x:1"), tokenizer, max_length=8)
    assert len(single.input_ids) == 8 and single.input_ids[-1] == tokenizer.sep_token_id


def test_encode_tokens_label_on_first_piece(tokenizer):
    example = Example(["中", "abc", " ", "国"], None, [1, 2, 3, 0], "x:1")
    f = encode_tokens(example, tokenizer, max_length=32)
    assert f.input_ids == [tokenizer.cls_token_id, *ids(tokenizer, "中", "a", "##b", "##c", "国"),
                           tokenizer.sep_token_id]
    # 'abc' -> label on 'a', IGNORE on '##b' '##c'; the space and its label 3 are dropped
    assert f.labels == [IGNORE, 1, 2, IGNORE, IGNORE, 0, IGNORE]
    assert f.token_type_ids == [0] * 7
    assert encode([example], tokenizer, 32, head="token")[0] == f


def test_encode_tokens_truncates_whole_tokens(tokenizer):
    example = Example(["中", "abc", "国"], None, [1, 2, 0], "x:1")
    f = encode_tokens(example, tokenizer, max_length=5)  # [CLS] 中 + 3 pieces of abc would not fit
    assert f.input_ids == [tokenizer.cls_token_id, *ids(tokenizer, "中"), tokenizer.sep_token_id]
    assert f.labels == [IGNORE, 1, IGNORE]
    f = encode_tokens(example, tokenizer, max_length=6)
    assert len(f.input_ids) == 6 and f.labels == [IGNORE, 1, 2, IGNORE, IGNORE, IGNORE]


def test_collate_token_batch():
    batch = [Features([1, 5, 6, 2], [0, 0, 0, 0], [IGNORE, 3, 4, IGNORE]), Features([1, 7, 2], [0, 0, 0], [IGNORE, 0, IGNORE])]
    out = collate(batch, pad_token_id=9)
    assert {k: v.dtype for k, v in out.items()} == {k: np.dtype("int64") for k in out}
    np.testing.assert_array_equal(out["input_ids"], [[1, 5, 6, 2], [1, 7, 2, 9]])
    np.testing.assert_array_equal(out["attention_mask"], [[1, 1, 1, 1], [1, 1, 1, 0]])
    np.testing.assert_array_equal(out["token_type_ids"], [[0, 0, 0, 0], [0, 0, 0, 0]])
    np.testing.assert_array_equal(out["labels"], [[IGNORE, 3, 4, IGNORE], [IGNORE, 0, IGNORE, IGNORE]])


def test_collate_sequence_batch(tokenizer):
    examples = [Example("中国", "人好", 1, "x:1"), Example("好", None, 0, "x:2")]
    out = collate(encode(examples, tokenizer, 32, head="sequence"), pad_token_id=tokenizer.pad_token_id)
    assert out["input_ids"].shape == (2, 7)
    np.testing.assert_array_equal(out["input_ids"][1, 3:], [tokenizer.pad_token_id] * 4)
    np.testing.assert_array_equal(out["token_type_ids"], [[0, 0, 0, 0, 1, 1, 1], [0] * 7])
    np.testing.assert_array_equal(out["attention_mask"], [[1] * 7, [1, 1, 1, 0, 0, 0, 0]])
    np.testing.assert_array_equal(out["labels"], [1, 0])


# ---- metrics ----

def test_accuracy_and_macro_f1():
    predictions, labels = [0, 1, 1, 0, 2], [0, 1, 0, 0, 1]
    assert score("accuracy", predictions, labels, ["a", "b", "c"]) == pytest.approx(60.0)
    # class 0: P 2/2 R 2/3 -> F1 0.8; class 1: P 1/2 R 1/2 -> 0.5; class 2 (predicted, never gold): 0
    assert score("macro_f1", predictions, labels, ["a", "b", "c"]) == pytest.approx(100 * 1.3 / 3)
    assert score("macro_f1", [0, 1, 1], [0, 1, 1], ["a", "b"]) == pytest.approx(100.0)


def test_token_accuracy_ignores_ignore_positions():
    predictions = [[5, 1, 2, 9, 0], [5, 0, 9, 9, 9]]
    labels = [[IGNORE, 1, 2, IGNORE, 1], [IGNORE, 0, IGNORE, IGNORE, IGNORE]]
    assert score("token_accuracy", predictions, labels, []) == pytest.approx(75.0)  # 3 of 4


NER = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-ORG", "I-ORG"]


def tag_ids(*tags):
    return [IGNORE if t is None else NER.index(t) for t in tags]


def test_entity_f1_by_hand():
    # gold: PER (0-1), LOC (3-4), ORG (6); predicted: PER right, LOC cut short, ORG missed.
    # precision 1/2, recall 1/3 -> F1 = 2 * (1/2 * 1/3) / (1/2 + 1/3) = 0.4
    gold = tag_ids(None, "B-PER", "I-PER", "O", "B-LOC", None, "I-LOC", "O", "B-ORG", None)
    pred = tag_ids(None, "B-PER", "I-PER", "O", "B-LOC", None, "O", "O", "O", None)
    pred = [p if g != IGNORE else NER.index("B-ORG") for p, g in zip(pred, gold)]  # ignored positions do not count
    assert score("entity_f1", [pred], [gold], NER) == pytest.approx(40.0)
    assert score("entity_f1", [gold], [gold], NER) == pytest.approx(100.0)
    # two sequences of different real lengths, padded with IGNORE
    gold2 = [tag_ids(None, "B-LOC", "I-LOC", None, None), tag_ids(None, "B-PER", "O", "B-ORG", None)]
    pred2 = [tag_ids(None, "B-LOC", "I-LOC", None, None), tag_ids(None, "B-PER", "O", "O", None)]
    # 3 gold entities, 2 predicted, both right: P 1, R 2/3 -> F1 0.8
    assert score("entity_f1", pred2, gold2, NER) == pytest.approx(80.0)


def test_unknown_metric():
    with pytest.raises(ValueError, match="unknown metric"):
        score("bleu", [0], [0], ["a"])
