"""The out-of-domain cards of Table 5 (tasks/ood/): CANLI's train.csv and online_shopping_10_cats.csv
read in their authors' CSV format, a hashed dev split that is stable and disjoint from train, and
bad rows stopped with file:line and the field."""
from pathlib import Path

import pytest

from ernie_tiny.tasks.card import load_card
from ernie_tiny.tasks.readers import TaskDataError, hashed_split, read_split

SHOPPING_HEADER = "cat,label,review"
CANLI_HEADER = "premise,hypothesis,label"


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def shopping_rows(n: int) -> str:
    cats = ["书籍", "平板", "手机", "水果", "洗发水", "热水器", "蒙牛", "衣服", "计算机", "酒店"]
    return "".join(f"{cats[i % 10]},{i % 2},\"第{i}条评论，很{'好' if i % 2 else '差'}\"\n" for i in range(n))


def canli_rows(n: int) -> str:
    labels = ["entailment", "contradiction"]
    return "".join(f"他让小明打了{i}下,小明被打了{i}下,{labels[i % 2]}\n" for i in range(n))


def test_shopping10_reads_the_distributed_csv_and_hashes_a_dev_split(tmp_path):
    path = write(tmp_path / "shopping10/online_shopping_10_cats.csv", "\ufeff" + SHOPPING_HEADER + "\n" + shopping_rows(200))
    card = load_card("shopping10")
    train = read_split(card, "train", data_dir=str(tmp_path))
    dev = read_split(card, "dev", data_dir=str(tmp_path))
    assert len(train.examples) + len(dev.examples) == 200
    assert 5 <= len(dev.examples) <= 40  # about 10%
    assert not {e.where for e in train.examples} & {e.where for e in dev.examples}
    assert train.labels == ["0", "1"] and train.examples[0].text_pair is None
    first = train.examples[0] if train.examples[0].where.endswith(":2") else dev.examples[0]
    assert first.where == f"{path}:2" and first.text == "第0条评论，很差" and first.label == 0
    again = read_split(card, "dev", data_dir=str(tmp_path))
    assert [e.where for e in again.examples] == [e.where for e in dev.examples]  # deterministic


def test_hashed_split_depends_on_the_row_not_its_place():
    row = {"cat": "书籍", "label": "1", "review": "好书"}
    assert hashed_split(row, 10) == hashed_split(dict(reversed(list(row.items()))), 10)
    assert hashed_split(row, 0) == "train"


def test_csv_quoted_field_over_two_lines_keeps_the_starting_line(tmp_path):
    write(tmp_path / "shopping10/online_shopping_10_cats.csv",
          SHOPPING_HEADER + "\n书籍,1,\"第一行\n第二行\"\n水果,0,不新鲜\n")
    card = load_card("shopping10")
    examples = read_split(card, "train", data_dir=str(tmp_path)).examples + \
        read_split(card, "dev", data_dir=str(tmp_path)).examples
    where = sorted(e.where.rsplit(":", 1)[1] for e in examples)
    assert where == ["2", "4"]


def test_shopping10_bad_label_names_file_line_and_field(tmp_path):
    path = write(tmp_path / "shopping10/online_shopping_10_cats.csv", SHOPPING_HEADER + "\n书籍,1,好\n书籍,2,坏\n")
    card = load_card("shopping10")
    with pytest.raises(TaskDataError) as err:  # the row lands in one of the two splits
        for split in ("train", "dev"):
            read_split(card, split, data_dir=str(tmp_path), labels=["0", "1"])
    assert f"{path}:3: field 'label' = '2' is not one of the labels" in str(err.value)


def test_csv_row_with_a_missing_field_names_file_and_line(tmp_path):
    path = write(tmp_path / "shopping10/online_shopping_10_cats.csv", SHOPPING_HEADER + "\n书籍,1,好\n书籍,1\n")
    with pytest.raises(TaskDataError, match=f"{path}:3: 2 fields, the header has 3"):
        read_split(load_card("shopping10"), "train", data_dir=str(tmp_path))


def test_csv_header_without_a_card_column_names_file_line_1(tmp_path):
    path = write(tmp_path / "canli/train.csv", "sentence1,sentence2,label\n甲,乙,entailment\n")
    with pytest.raises(TaskDataError) as err:
        read_split(load_card("canli"), "train", data_dir=str(tmp_path))
    assert f"{path}:1: the header" in str(err.value) and "['premise', 'hypothesis']" in str(err.value)


def test_canli_pairs_with_labels_from_train_and_a_hashed_dev(tmp_path):
    write(tmp_path / "canli/train.csv", CANLI_HEADER + "\n" + canli_rows(100))
    card = load_card("canli")
    train = read_split(card, "train", data_dir=str(tmp_path))
    dev = read_split(card, "dev", data_dir=str(tmp_path), labels=train.labels)
    assert train.labels == ["contradiction", "entailment"]
    assert len(train.examples) + len(dev.examples) == 100 and dev.examples
    example = train.examples[0]
    assert example.text.startswith("他让小明打了") and example.text_pair.startswith("小明被打了")


def test_canli_missing_file_says_how_to_get_it(tmp_path):
    with pytest.raises(TaskDataError, match="no such file .*huggingface.co/datasets/sxu/CANLI"):
        read_split(load_card("canli"), "train", data_dir=str(tmp_path))


def test_dev_percent_needs_one_file_for_train_and_dev(tmp_path):
    from ernie_tiny.config import ConfigError

    from ernie_tiny.tasks.card import card_path

    path = write(tmp_path / "x.yaml", card_path("shopping10").read_text(
        encoding="utf-8").replace("dev: online_shopping_10_cats.csv", "dev: dev.csv"))
    with pytest.raises(ConfigError, match="dev_percent: a hashed dev split needs train and dev"):
        load_card(str(path))
