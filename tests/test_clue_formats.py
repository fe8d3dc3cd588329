"""The six CLUE and three FewCLUE tasks, as the benchmarks distribute them, through the evaluation
stage's two data paths: a ``Data.dir`` with one subfolder per card holding the official json-lines
files (with every field the official files carry), and, with ``Data.dir`` empty, PaddleNLP's own
loaders (``load_dataset("clue"/"fewclue", ...)``), here handed the same files through their
``data_files`` argument instead of a download. Both are validated by the evaluate config, read
and encoded by the runner, and give the same examples. Hand-made rows in the official formats;
no network."""
import json
from pathlib import Path

import pytest

from config_files import write_model_dir
from ernie_tiny.config import ConfigError, validate_config
from ernie_tiny.evaluation.schema import EvalTaskEntry, EvaluateConfig
from ernie_tiny.tasks.card import load_card
from ernie_tiny.tasks.readers import TaskDataError, read_split

WSC_TEXT = "这时候放在床上枕头旁边的手机响了，我感到奇怪，因为欠费已被停机两个月，现在它突然响了。"

# per task: (file names, train rows, dev rows) in the official formats
OFFICIAL = {
    "afqmc": (("train.json", "dev.json"), [
        {"sentence1": "蚂蚁借呗等额还款可以换成先息后本吗", "sentence2": "借呗有先息到期还本吗", "label": "0"},
        {"sentence1": "花呗怎么更改绑定银行卡", "sentence2": "花呗如何更换银行卡", "label": "1"},
    ], [
        {"sentence1": "双十一花呗提额在哪", "sentence2": "里可以提花呗额度", "label": "0"},
    ]),
    "tnews": (("train.json", "dev.json"), [
        {"label": "102", "label_desc": "news_entertainment", "sentence": "江疏影甜甜圈自拍，迷之角度竟这么好看",
         "keywords": "江疏影,美少女,经纪人,甜甜圈"},
        {"label": "110", "label_desc": "news_military", "sentence": "以色列大规模空袭开始", "keywords": ""},
        {"label": "108", "label_desc": "news_edu", "sentence": "高考志愿怎么填", "keywords": "高考"},
    ], [
        {"label": "116", "label_desc": "news_game", "sentence": "新手如何快速上分", "keywords": "上分"},
    ]),
    "iflytek": (("train.json", "dev.json"), [
        {"label": "11", "label_des": "薅羊毛", "sentence": "一款领优惠券的购物省钱工具"},
        {"label": "118", "label_des": "其他", "sentence": "提供各种实用功能的小工具"},
    ], [
        {"label": "0", "label_des": "打车", "sentence": "滴滴出行，随时随地叫车"},
    ]),
    "ocnli": (("train.50k.json", "dev.json"), [
        {"level": "medium", "sentence1": "一月份跟二月份肯定有一个月份有", "sentence2": "肯定有一个月份有",
         "label": "entailment", "label0": None, "label1": None, "label2": None, "label3": None, "label4": None,
         "genre": "lit", "prem_id": "lit_635", "id": 0},
        {"level": "hard", "sentence1": "他们会议讨论了很久", "sentence2": "会议很短",
         "label": "contradiction", "genre": "gov", "prem_id": "gov_1", "id": 1},
    ], [
        {"level": "easy", "sentence1": "身上裹一件工厂发的棉大衣", "sentence2": "她什么都没穿", "label": "-",
         "label0": "contradiction", "label1": "neutral", "label2": "entailment", "label3": "neutral",
         "label4": "contradiction", "genre": "lit", "prem_id": "lit_0", "id": 0},
        {"level": "easy", "sentence1": "身上裹一件工厂发的棉大衣", "sentence2": "她穿着衣服", "label": "neutral",
         "genre": "lit", "prem_id": "lit_0", "id": 1},
    ]),
    "cluewsc2020": (("train.json", "dev.json"), [
        {"target": {"span2_index": 37, "span1_index": 5, "span1_text": "床", "span2_text": "它"},
         "idx": 261, "label": "false", "text": WSC_TEXT},
        {"target": {"span2_index": 37, "span1_index": 12, "span1_text": "手机", "span2_text": "它"},
         "idx": 262, "label": "true", "text": WSC_TEXT},
    ], [
        {"target": {"span2_index": 0, "span1_index": 2, "span1_text": "小明", "span2_text": "他"},
         "idx": 0, "label": "true", "text": "他说小明来了。"},
    ]),
    "csl": (("train.json", "dev.json"), [
        {"id": 1, "abst": "为解决传统均匀FFT波束形成算法引起的3维声呐成像分辨率降低的问题",
         "keyword": ["水声学", "FFT", "波束形成", "3维成像声呐"], "label": "1"},
        {"id": 2, "abst": "研究了一种新的材料", "keyword": ["材料"], "label": "0"},
    ], [
        {"id": 3, "abst": "提出了知识蒸馏方法", "keyword": ["知识蒸馏", "多任务学习"], "label": "1"},
    ]),
    "bustm": (("train_few_all.json", "dev_few_all.json"), [
        {"id": 5, "sentence1": "女孩子到底是不是你", "sentence2": "你不是女孩子吗", "label": "1"},
        {"id": 6, "sentence1": "今天天气怎么样", "sentence2": "播放一首歌", "label": "0"},
    ], [
        {"id": 7, "sentence1": "明天会下雨吗", "sentence2": "明天天气如何", "label": "1"},
    ]),
    "eprstmt": (("train_few_all.json", "dev_few_all.json"), [
        {"id": 23, "sentence": "外包装上有点磨损，试听后感觉不错", "label": "Positive"},
        {"id": 24, "sentence": "声音太小，退货了", "label": "Negative"},
    ], [
        {"id": 1, "sentence": "物流很快，质量很好", "label": "Positive"},
    ]),
    "csldcp": (("train_few_all.json", "dev_few_all.json"), [
        {"content": "通过实验研究了复合材料的力学性能", "label": "材料科学与工程", "id": 1770},
        {"content": "分析了古代诗歌中的意象", "label": "中国语言文学", "id": 1771},
        {"content": "研究了合金的热处理工艺", "label": "材料科学与工程", "id": 1772},
    ], [
        {"content": "讨论了唐诗的格律", "label": "中国语言文学", "id": 5},
    ]),
}

# per task: the dev examples as the model should see them: (text, text_pair, label name)
EXPECTED_DEV = {
    "afqmc": [("双十一花呗提额在哪", "里可以提花呗额度", "0")],
    "tnews": [("新手如何快速上分", None, "116")],
    "iflytek": [("滴滴出行，随时随地叫车", None, "0")],
    "ocnli": [("身上裹一件工厂发的棉大衣", "她穿着衣服", "neutral")],  # the '-' row is skipped
    "cluewsc2020": [("[他]说_小明_来了。", None, "true")],
    "csl": [("知识蒸馏 多任务学习", "提出了知识蒸馏方法", "1")],
    "bustm": [("明天会下雨吗", "明天天气如何", "1")],
    "eprstmt": [("物流很快，质量很好", None, "Positive")],
    "csldcp": [("讨论了唐诗的格律", None, "中国语言文学")],
}


def write_jsonl(path: Path, rows) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture
def clue_dir(tmp_path) -> Path:
    """A Data.dir laid out as the benchmarks distribute their files."""
    root = tmp_path / "clue"
    for task, ((train_name, dev_name), train, dev) in OFFICIAL.items():
        write_jsonl(root / task / train_name, train)
        write_jsonl(root / task / dev_name, dev)
    return root


def config_data(clue_dir: Path, model_dir: Path, tasks=tuple(OFFICIAL)) -> dict:
    return {"Model": {"path": str(model_dir)}, "Data": {"dir": str(clue_dir)},
            "Tasks": [{"card": t} for t in tasks]}


@pytest.fixture
def model_dir(tmp_path) -> Path:
    """A stand-in model directory: the config check reads its files, nothing loads it."""
    return write_model_dir(tmp_path / "student", num_hidden_layers=2, hidden_size=24, max_position_embeddings=512)


def test_the_cards_read_the_official_file_names():
    for task, ((train_name, dev_name), _, _) in OFFICIAL.items():
        card = load_card(task)
        assert card.source.local.splits == {"train": train_name, "dev": dev_name}, task


@pytest.mark.parametrize("task", list(OFFICIAL))
def test_each_task_reads_in_its_official_format(task, clue_dir):
    card = load_card(task)
    train = read_split(card, "train", data_dir=str(clue_dir))
    dev = read_split(card, "dev", data_dir=str(clue_dir), labels=train.labels)
    assert len(train.examples) == len(OFFICIAL[task][1])
    got = [(e.text, e.text_pair, dev.labels[e.label]) for e in dev.examples]
    assert got == EXPECTED_DEV[task]
    assert dev.skipped == (1 if task == "ocnli" else 0)
    assert dev.examples[0].where == f"{clue_dir / task / OFFICIAL[task][0][1]}:{2 if task == 'ocnli' else 1}"


def test_cluewsc_marks_the_candidate_and_the_pronoun_at_their_offsets(clue_dir):
    train = read_split(load_card("cluewsc2020"), "train", data_dir=str(clue_dir))
    assert [e.text for e in train.examples] == [
        "这时候放在_床_上枕头旁边的手机响了，我感到奇怪，因为欠费已被停机两个月，现在[它]突然响了。",
        "这时候放在床上枕头旁边的_手机_响了，我感到奇怪，因为欠费已被停机两个月，现在[它]突然响了。",
    ]
    assert [train.labels[e.label] for e in train.examples] == ["false", "true"]


def test_csl_joins_the_keyword_list_with_spaces_as_the_first_text(clue_dir):
    train = read_split(load_card("csl"), "train", data_dir=str(clue_dir))
    assert train.examples[0].text == "水声学 FFT 波束形成 3维成像声呐"  # PaddleNLP's benchmark: " ".join(keyword)
    assert train.examples[0].text_pair.startswith("为解决传统均匀FFT")


def test_csldcp_labels_are_the_cards_67_whatever_train_holds(clue_dir):
    card = load_card("csldcp")
    train = read_split(card, "train", data_dir=str(clue_dir))
    assert train.labels == card.label.values and len(train.labels) == 67 == len(set(train.labels))
    assert [train.labels[e.label] for e in train.examples] == ["材料科学与工程", "中国语言文学", "材料科学与工程"]
    write_jsonl(clue_dir / "csldcp" / "dev_few_all.json", [{"content": "x", "label": "物理学", "id": 1},
                                                           {"content": "y", "label": "物理", "id": 2}])
    with pytest.raises(TaskDataError, match=r"dev_few_all.json:2: field 'label' = '物理' is not one of the labels"):
        read_split(card, "dev", data_dir=str(clue_dir), labels=train.labels)
    write_jsonl(clue_dir / "csldcp" / "dev_few_all.json", [{"content": "x", "label": "物理学", "id": 1}])
    (example,) = read_split(card, "dev", data_dir=str(clue_dir), labels=train.labels).examples
    assert example.label == card.label.values.index("物理学")  # a label train lacks keeps its id


@pytest.mark.parametrize("task", list(OFFICIAL))
def test_a_malformed_line_fails_naming_file_and_line(task, clue_dir):
    dev_file = clue_dir / task / OFFICIAL[task][0][1]
    good = dev_file.read_text(encoding="utf-8").splitlines()
    dev_file.write_text("\n".join(good + ["", '{"label": "1", "sentence": "cut off'] + good) + "\n", encoding="utf-8")
    card = load_card(task)
    labels = read_split(card, "train", data_dir=str(clue_dir)).labels
    with pytest.raises(TaskDataError) as info:
        read_split(card, "dev", data_dir=str(clue_dir), labels=labels)
    assert str(info.value).startswith(f"{dev_file}:{len(good) + 2}: not a JSON line")


def test_the_evaluate_config_accepts_the_directory(clue_dir, model_dir):
    config = validate_config(EvaluateConfig, config_data(clue_dir, model_dir))
    assert [c.name for c in config.cards()] == list(OFFICIAL)


def test_the_evaluate_config_names_a_missing_file_before_any_work(clue_dir, model_dir):
    (clue_dir / "ocnli" / "train.50k.json").unlink()
    with pytest.raises(ConfigError) as info:
        validate_config(EvaluateConfig, config_data(clue_dir, model_dir), "c.yaml", {"Tasks.3": 9})
    assert str(info.value) == (f"c.yaml:9: Tasks.3.card: ocnli: no train file {clue_dir / 'ocnli' / 'train.50k.json'}; "
                               "CLUE ocnli_public.zip (train.50k.json, dev.json) into <Data.dir>/ocnli/")


def test_task_data_encodes_pairs_spans_and_keywords(clue_dir, tmp_path):
    """What the model is fed: CSL's keywords as segment 0 and the abstract as segment 1 (max
    length 256), CLUEWSC's markers as tokens, OCNLI without its '-' row."""
    from ernie_tiny.tasks.data import TrainDev
    from ernie_tiny.tokenization import build_vocab, tokenizer_from_vocab

    texts = [json.dumps(rows, ensure_ascii=False) for _, rows, dev in OFFICIAL.values()] + \
        [json.dumps(dev, ensure_ascii=False) for _, _, dev in OFFICIAL.values()]
    tokenizer = tokenizer_from_vocab(build_vocab(texts, tmp_path / "vocab.txt", 5000, 1))

    csl = TrainDev.load(load_card("csl"), EvalTaskEntry(card="csl"), tokenizer, str(clue_dir))
    ids, segments = csl.dev.features[0].input_ids, csl.dev.features[0].token_type_ids
    tokens = tokenizer.convert_ids_to_tokens(ids)
    first_sep = tokens.index("[SEP]")
    assert tokens[1:first_sep] == list("知识蒸馏多任务学习")  # the space between keywords makes no token
    assert "".join(tokens[first_sep + 1:-1]) == "提出了知识蒸馏方法"
    assert set(segments[:first_sep + 1]) == {0} and set(segments[first_sep + 1:]) == {1}
    assert csl.labels == ["0", "1"] and csl.dev.features[0].labels == 1

    wsc = TrainDev.load(load_card("cluewsc2020"), EvalTaskEntry(card="cluewsc2020"), tokenizer, str(clue_dir))
    tokens = tokenizer.convert_ids_to_tokens(wsc.train.features[0].input_ids)
    assert "".join(tokens[1:-1]) == "这时候放在_床_上枕头旁边的手机响了，我感到奇怪，因为欠费已被停机两个月，现在[它]突然响了。"

    ocnli = TrainDev.load(load_card("ocnli"), EvalTaskEntry(card="ocnli", max_length=8), tokenizer, str(clue_dir))
    assert (ocnli.train.skipped, ocnli.dev.skipped, len(ocnli.dev)) == (0, 1, 1)
    assert all(len(f.input_ids) <= 8 for f in ocnli.train.features + ocnli.dev.features)  # the task's max_length override


# ---- the default path: PaddleNLP's loaders (Data.dir empty) ----

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def offline_loaders(clue_dir, monkeypatch) -> list:
    """``paddlenlp.datasets.load_dataset`` as the default path calls it (name, config, splits=),
    handed the hand-made file of that split (``data_files=``) instead of downloading, so the
    builders' own code runs on it: reading, OCNLI's '-' filter, labels to indices. Returns the
    calls made."""
    import paddlenlp.datasets

    real = paddlenlp.datasets.load_dataset
    files = {}
    for task in OFFICIAL:
        card = load_card(task)
        spec = card.source.paddlenlp
        for split in ("train", "dev"):
            files[(spec.name, spec.config, spec.splits[split])] = clue_dir / task / card.source.local.splits[split]
    calls = []

    def load_from_file(name, config=None, splits=None, **kwargs):
        assert not kwargs, kwargs
        calls.append((name, config, splits))
        return real(name, config, splits=splits, data_files=str(files[(name, config, splits)]))

    monkeypatch.setattr(paddlenlp.datasets, "load_dataset", load_from_file)
    return calls


def test_paddlenlp_loaders_turn_labels_into_indices_of_their_own_lists(clue_dir):
    """The cause of issue 15.1: CLUE's builders give each label's index in their own label list
    (OCNLI's order differs from the card's); FewCLUE's have no list and keep the strings."""
    from paddlenlp.datasets import load_dataset

    def labels(name, config, split, task, file):
        return [r["label"] for r in load_dataset(name, config, splits=split, data_files=str(clue_dir / task / file))]

    assert labels("clue", "tnews", "train", "tnews", "train.json") == [2, 9, 7]  # "102", "110", "108"
    assert labels("clue", "ocnli", "train", "ocnli", "train.50k.json") == [0, 1]  # entailment, contradiction
    assert labels("clue", "cluewsc2020", "train", "cluewsc2020", "train.json") == [1, 0]  # "false", "true"
    assert labels("fewclue", "eprstmt", "train_few_all", "eprstmt", "train_few_all.json") == ["Positive", "Negative"]


@pytest.mark.parametrize("task", list(OFFICIAL))
def test_the_paddlenlp_path_gives_the_examples_of_the_local_path(task, clue_dir, offline_loaders):
    card = load_card(task)
    spec = card.source.paddlenlp
    local_train = read_split(card, "train", data_dir=str(clue_dir))
    local_dev = read_split(card, "dev", data_dir=str(clue_dir), labels=local_train.labels)
    train = read_split(card, "train")  # no Data.dir: PaddleNLP's loader
    dev = read_split(card, "dev", labels=train.labels)
    assert offline_loaders == [(spec.name, spec.config, spec.splits["train"]), (spec.name, spec.config, spec.splits["dev"])]

    def examples(split):
        return [(e.text, e.text_pair, e.label) for e in split.examples]

    assert train.labels == local_train.labels == (list(card.label.values))
    assert examples(train) == examples(local_train) and examples(dev) == examples(local_dev)
    assert [(e.text, e.text_pair, dev.labels[e.label]) for e in dev.examples] == EXPECTED_DEV[task]
    assert dev.examples[0].where == f"paddlenlp:{spec.name}/{spec.config}/{spec.splits['dev']}, row 1"
    assert dev.skipped == 0  # the loader drops OCNLI's '-' rows itself, before the card's skip list sees them


def test_the_runner_checks_every_task_through_the_loaders_before_the_first_point(offline_loaders):
    from ernie_tiny.evaluation.runner import check_data

    check_data([(EvalTaskEntry(card=task), load_card(task)) for task in OFFICIAL], "")
    assert len(offline_loaders) == 2 * len(OFFICIAL)


def test_configs_clue_reads_every_benchmark_task_through_paddlenlp_by_default():
    import yaml

    config = yaml.safe_load((ROOT / "configs" / "clue.yaml").read_text(encoding="utf-8"))
    assert config["Data"]["dir"] == ""
    benchmark = [t["card"] for t in config["Tasks"] if load_card(t["card"]).group in ("clue", "fewclue")]
    assert benchmark == list(OFFICIAL)
    for task in benchmark:
        source = load_card(task).source
        assert source.paddlenlp.name == ("clue" if load_card(task).group == "clue" else "fewclue") and source.local
