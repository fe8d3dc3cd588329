"""The report as the paper's Table 5 (configs/clue.yaml's Report.groups and reference rows): the
layout from finished records (all 11 tasks, and a run that lacks some), and a short run of
tools/evaluate.py -c configs/clue.yaml on hand-made files in the datasets' own formats."""
import json
import subprocess
import sys
from pathlib import Path

import yaml

from ernie_tiny.evaluation.report import markdown, summarize, write_results
from test_evaluate import TABLE5_TASKS, record, tiny_model  # noqa: F401 (a fixture)

ROOT = Path(__file__).resolve().parent.parent
CLUE = yaml.safe_load((ROOT / "configs/clue.yaml").read_text(encoding="utf-8"))
GROUPS = CLUE["Report"]["groups"]
REFERENCE = CLUE["Report"]["reference"]
HEADER = ("| **model** | **AFQMC** | **TNEWS** | **IFLYTEK** | **OCNLI** | **CLUEWSC2020** | **CSL** | **CANLI** | "
          "**SHOPPING10** | **BUSTM** | **EPRSTMT** | **CSLDCP** | **Avg** |")
ERNIE_ROW = ("| ERNIE 3.0 Tiny 4L-312H (paper) | 72.4 | 55.4 | 50.6 | 74.4 | 68.4 | 76.5 | 98.2 | 94.5 | 72.3 | 87.0 | "
             "45.1 | 72.3 |")
TINYBERT_ROW = ("| TinyBERT-Chinese 4L (paper) | 69.1 | 54.0 | 39.7 | 69.6 | 70.1 | 75.1 | 93.1 | 93.6 | 71.3 | 78.6 | "
                "34.1 | 68.0 |")


def test_all_eleven_tasks_as_table5_with_both_paper_rows():
    records = [record(task, 16, 1e-5, 1, 50.0 + i) for i, task in enumerate(TABLE5_TASKS)]
    md = markdown(summarize(records, "student"), REFERENCE, GROUPS)
    assert "| | In-Domain |  |  |  |  |  | Out-Domain |  | Low-Resource |  |  | |" in md
    assert HEADER in md and ERNIE_ROW in md and TINYBERT_ROW in md
    assert "| student | 50.0 | 51.0 | 52.0 | 53.0 | 54.0 | 55.0 | 56.0 | 57.0 | 58.0 | 59.0 | 60.0 | 55.0 |" in md
    assert "Avg: the mean over all 11 tasks of the table." in md


def test_missing_tasks_are_blank_and_the_average_names_its_tasks(tmp_path):
    records = [record("afqmc", 16, 1e-5, 1, 70.0), record("canli", 16, 1e-5, 1, 90.0),
               record("bustm", 16, 1e-5, 1, 60.0), record("review_sentiment", 16, 1e-5, 1, 80.0)]
    md = markdown(summarize(records, "student"), REFERENCE, GROUPS)
    assert "| student | 70.0 |  |  |  |  |  | 90.0 |  | 60.0 |  |  | 73.3 |" in md
    ernie = round((72.4 + 98.2 + 72.3) / 3, 1)
    assert (f"| ERNIE 3.0 Tiny 4L-312H (paper) | 72.4 | 55.4 | 50.6 | 74.4 | 68.4 | 76.5 | 98.2 | 94.5 | 72.3 | 87.0 | "
            f"45.1 | {ernie} |") in md
    assert ("Avg: the mean over the 3 of 11 tasks this run has (afqmc, canli, bustm), for every row; blank: not in "
            "this run (tnews, iflytek, ocnli, cluewsc2020, csl, shopping10, eprstmt, csldcp). Over all 11: "
            "ERNIE 3.0 Tiny 4L-312H (paper) 72.3, TinyBERT-Chinese 4L (paper) 68.0.") in md
    assert "Not in the table: review_sentiment" in md and "| review_sentiment | accuracy | 80.00 |" in md
    written = write_results(tmp_path, records, "student", REFERENCE, groups=GROUPS)
    assert [p.name for p in written] == ["results.csv", "results.md", "results.png"]
    assert (tmp_path / "results.png").read_bytes()[:4] == b"\x89PNG"


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def hand_made_data(root: Path) -> None:
    """CANLI's train.csv and online_shopping_10_cats.csv, and the 9 CLUE / FewCLUE tasks' json-lines
    files under their official names (tests/test_clue_formats.py's rows)."""
    from test_clue_formats import OFFICIAL

    for task, ((train_name, dev_name), train, dev) in OFFICIAL.items():
        for name, rows in ((train_name, train), (dev_name, dev)):
            write(root / task / name, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    write(root / "canli/train.csv", "premise,hypothesis,label\n" + "".join(
        f"他让弟弟{'笑' if i % 2 else '哭'}了{i}次,弟弟{'笑' if i % 2 else '哭'}了,{'entailment' if i % 2 else 'contradiction'}\n"
        for i in range(40)))
    write(root / "shopping10/online_shopping_10_cats.csv", "cat,label,review\n" + "".join(
        f"{['书籍', '水果', '酒店'][i % 3]},{i % 2},\"{'很好，满意' if i % 2 else '太差，失望'}{i}\"\n" for i in range(40)))
    rows = [{"id": i, "sentence": "质量很好" if i % 2 else "太差了", "label": "Positive" if i % 2 else "Negative"}
            for i in range(16)]
    for name in ("train_few_all.json", "dev_few_all.json"):
        write(root / "eprstmt" / name, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def test_evaluate_clue_yaml_on_files_in_the_datasets_formats(tmp_path, tiny_model):
    data = tmp_path / "data"
    hand_made_data(data)
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "tools/evaluate.py"), "-c", str(ROOT / "configs/clue.yaml"),
         "-o", f"Data.dir={data}", "-o", f"Model.path={tiny_model}", "-o", f"Global.output_dir={out}",
         "-o", "Global.num_threads=0",
         "-o", "Tasks=[" + ", ".join(f"{{card: {t}, max_length: 64}}" for t in TABLE5_TASKS) + "]",  # not the offline two
         "-o", "Grid.batch_sizes=[16]", "-o", "Grid.learning_rates=[1e-3]", "-o", "Grid.card_overrides=false",
         "-o", "Grid.epochs=1"],
        cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    md = (out / "results.md").read_text(encoding="utf-8")
    assert HEADER in md and ERNIE_ROW in md and TINYBERT_ROW in md
    assert "Avg: the mean over all 11 tasks of the table." in md
    assert (out / "results.png").read_bytes()[:4] == b"\x89PNG"
    records = [json.loads(line) for line in (out / "grid_points.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [r["task"] for r in records] == TABLE5_TASKS
    canli = records[TABLE5_TASKS.index("canli")]
    assert canli["train_examples"] + canli["dev_examples"] == 40 and canli["dev_examples"]  # dev hashed out of train.csv
    table = md.split("as its Table 5")[1]
    model_row = next(line for line in table.splitlines() if line.startswith(f"| {CLUE['Model']['name']} |"))
    assert model_row.count("|") == 14 and "|  |" not in model_row  # a score in every column and the Avg


def test_without_data_dir_the_local_only_cards_are_left_out_and_blank(tmp_path, tiny_model, capsys):
    from ernie_tiny.config import load_config
    from ernie_tiny.evaluation.runner import run
    from ernie_tiny.evaluation.schema import EvaluateConfig

    out = tmp_path / "out"
    overrides = [f"Model.path={tiny_model}", f"Global.output_dir={out}", "Global.num_threads=0", "Data.dir=''",
                 "Tasks=[{card: canli}, {card: pd_entity_type, max_train_examples: 16, max_dev_examples: 8, "
                 "max_length: 32}]",
                 "Grid.batch_sizes=[8]", "Grid.learning_rates=[1e-3]", "Grid.card_overrides=false", "Grid.epochs=1",
                 "Report.chart=false"]
    run(load_config(EvaluateConfig, ROOT / "configs/clue.yaml", overrides))
    assert "[canli] left out: its files are read only from Data.dir" in capsys.readouterr().out
    md = (out / "results.md").read_text(encoding="utf-8")
    assert "This run has none of the table's 11 tasks; no Avg. Not in the table: pd_entity_type" in md
    assert ERNIE_ROW.rsplit("|", 2)[0] in md
