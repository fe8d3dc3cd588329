"""The finetuning protocol of a grid point against PaddleNLP's CLUE benchmark
(``examples/benchmark/clue/classification/run_clue_classifier.py`` and its grid scripts): steps
per epoch keep the last partial batch, warm-up rounds down, the gradients' global norm is
clipped at 1.0, the grid's dropout goes to the encoder and not to the head, and FewCLUE's small
sets are scored a few times an epoch. Tiny real models (2 layers, 24 wide) where one is needed."""
from pathlib import Path

import pytest

from ernie_tiny.finetune.schedule import batches_per_epoch, eval_interval, eval_steps, total_steps, warmup_steps
from ernie_tiny.tasks.card import load_card

CLUE = ["afqmc", "tnews", "iflytek", "ocnli", "cluewsc2020", "csl"]
FEWCLUE = ["bustm", "eprstmt", "csldcp"]


def save_tiny_encoder(path: Path, hidden_dropout: float = 0.1) -> Path:
    import paddle

    from ernie_tiny.schema import ModelSection
    from ernie_tiny.modeling import build_encoder

    paddle.seed(0)
    spec = ModelSection(num_layers=2, hidden_size=24, num_heads=4, intermediate_size=48, max_position_embeddings=64,
                        hidden_dropout=hidden_dropout, attention_dropout=0.1)
    build_encoder(spec, 40, 0).save_pretrained(str(path), safe_serialization=True)
    return path


@pytest.fixture(scope="module")
def tiny_encoder(tmp_path_factory) -> Path:
    return save_tiny_encoder(tmp_path_factory.mktemp("tiny_encoder"))


# ---- steps and warm-up (issue 15.5) ----

def test_steps_keep_the_last_partial_batch():
    assert batches_per_epoch(1244, 64) == 20  # CLUEWSC's 1244 train rows: 19 whole batches and one of 28
    assert total_steps(1244, 64, 50) == 1000  # dropping the partial batch would make it 950
    assert total_steps(1244, 8, 50) == 7800 and total_steps(1244, 64, 50, max_steps=30) == 30
    assert batches_per_epoch(3, 16) == 1


def test_warmup_rounds_down():
    assert warmup_steps(1000, 0.1) == 100 and warmup_steps(95, 0.1) == 9 and warmup_steps(5, 0.1) == 0


def test_the_scheduler_peaks_after_the_rounded_down_warmup(tiny_encoder):
    from ernie_tiny.finetune.loop import FinetuneParams, build_task_model, finetune_optimizer

    model = build_task_model(str(tiny_encoder), load_card("afqmc"), 2, 0.1)
    _, scheduler = finetune_optimizer(model, FinetuneParams(lr=1e-3, warmup_ratio=0.1), total=95)
    rates = [scheduler.get_lr()]
    for _ in range(95):
        scheduler.step()
        rates.append(scheduler.get_lr())
    assert rates[8] == pytest.approx(1e-3 * 8 / 9) and rates[9] == pytest.approx(1e-3)  # 9 warm-up steps, not 10
    assert rates[95] == pytest.approx(0.0)


def test_a_finetuning_run_takes_the_partial_batch_and_scores_on_schedule(tiny_encoder):
    """10 rows at batch 4: 3 steps an epoch (4 + 4 + 2), 6 in two epochs."""
    from ernie_tiny.finetune.loop import FinetuneParams, finetune
    from ernie_tiny.tasks.encode import Features

    train = [Features([1, 5 + i, 6 + i % 3, 2], [0, 0, 0, 0], i % 2) for i in range(10)]
    dev = train[:4]
    params = FinetuneParams(lr=1e-3, batch_size=4, epochs=2, eval_every=4, seed=1)
    clue = finetune(str(tiny_encoder), load_card("afqmc"), ["0", "1"], train, dev, 0, params)
    assert clue.steps == 6 and [step for step, _ in clue.evals] == [4, 6]  # every 4 steps and the last
    fewclue = finetune(str(tiny_encoder), load_card("eprstmt"), ["Positive", "Negative"], train, dev, 0, params)
    assert fewclue.steps == 6 and [step for step, _ in fewclue.evals] == [1, 2, 3, 4, 5, 6]  # 3 steps an epoch


# ---- the evaluation schedule of small sets (issue 15.6) ----

def test_fewclue_cards_ask_for_four_dev_scores_an_epoch_and_clue_cards_keep_every_100_steps():
    assert [load_card(t).evals_per_epoch for t in FEWCLUE] == [4, 4, 4]
    assert [load_card(t).evals_per_epoch for t in CLUE] == [0] * 6


def test_the_evaluation_schedule_of_a_small_set():
    # 32 rows at batch 16: 2 steps an epoch, 20 in 10 epochs; eval_every 100 alone would score once, at the end
    assert eval_steps(20, eval_interval(batches_per_epoch(32, 16), 100)) == [20]
    assert eval_steps(20, eval_interval(batches_per_epoch(32, 16), 100, evals_per_epoch=4)) == list(range(1, 21))
    # CSLDCP's 536 rows at batch 16: 34 steps an epoch, scored every 8, at least 4 times in each epoch
    interval = eval_interval(batches_per_epoch(536, 16), 100, evals_per_epoch=4)
    steps = eval_steps(total_steps(536, 16, 10), interval)
    assert interval == 8 and steps[:3] == [8, 16, 24] and steps[-1] == 340
    assert min(sum(1 for s in steps if 34 * e < s <= 34 * (e + 1)) for e in range(10)) >= 4
    # a large set keeps eval_every; without evals_per_epoch, the reference's every 100 steps and the last
    assert eval_interval(batches_per_epoch(34334, 16), 100, evals_per_epoch=4) == 100
    assert eval_steps(total_steps(1244, 64, 50), eval_interval(20, 100)) == list(range(100, 1001, 100))
    assert eval_steps(950, 100)[-2:] == [900, 950] and eval_interval(20, 0) == 20  # eval_every 0: once an epoch


# ---- clipping (issue 15.3) ----

def test_the_optimizer_clips_the_global_gradient_norm_at_1(tiny_encoder):
    import paddle

    from ernie_tiny.finetune.loop import FinetuneParams, build_task_model, finetune_optimizer

    model = build_task_model(str(tiny_encoder), load_card("afqmc"), 2, 0.1)
    optimizer, _ = finetune_optimizer(model, FinetuneParams(), total=10)
    assert isinstance(optimizer._grad_clip, paddle.nn.ClipGradByGlobalNorm)
    assert optimizer._grad_clip.clip_norm == 1.0
    optimizer, _ = finetune_optimizer(model, FinetuneParams(max_grad_norm=0), total=10)
    assert optimizer._grad_clip is None
    # Paddle's default AdamW moments, as the benchmark has them (not pretraining's 0.98 / 1e-6)
    assert (optimizer._beta1, optimizer._beta2, optimizer._epsilon) == (0.9, 0.999, 1e-8)


def test_the_optimizers_clip_brings_large_real_gradients_to_global_norm_1(tiny_encoder):
    import numpy as np
    import paddle

    from ernie_tiny.finetune.loop import FinetuneParams, build_task_model, finetune_optimizer

    model = build_task_model(str(tiny_encoder), load_card("afqmc"), 2, 0.0)
    optimizer, _ = finetune_optimizer(model, FinetuneParams(), total=10)
    logits = model(paddle.to_tensor([[1, 5, 6, 2]]), token_type_ids=paddle.to_tensor([[0, 0, 0, 0]]))
    (logits.sum() * 1e4).backward()
    pairs = [(p, p.grad) for p in model.parameters() if p.grad is not None]
    raw = float(np.sqrt(sum(float((g.astype("float32") ** 2).sum()) for _, g in pairs)))
    clipped = optimizer._grad_clip(pairs)
    norm = float(np.sqrt(sum(float((g.astype("float32") ** 2).sum()) for _, g in clipped)))
    assert raw > 10 and norm == pytest.approx(1.0, rel=1e-4)


# ---- dropout (issue 15.4) ----

def dropouts(model) -> dict:
    encoder = model.base_model
    layers = list(encoder.encoder.layers)
    return {"embeddings": encoder.embeddings.dropout.p,
            "feed_forward": {layer.dropout.p for layer in layers},
            "residual": {layer.dropout1.p for layer in layers} | {layer.dropout2.p for layer in layers},
            "attention": {layer.self_attn.dropout for layer in layers},
            "head": model.dropout.p}


def test_grid_dropout_0_1_keeps_the_saved_config(tiny_encoder, tmp_path):
    from ernie_tiny.finetune.loop import build_task_model

    assert dropouts(build_task_model(str(tiny_encoder), load_card("iflytek"), 119, 0.1)) == {
        "embeddings": 0.1, "feed_forward": {0.0}, "residual": {0.1}, "attention": {0.1}, "head": 0.1}
    saved_02 = save_tiny_encoder(tmp_path / "dropout_0.2", hidden_dropout=0.2)
    assert dropouts(build_task_model(str(saved_02), load_card("iflytek"), 119, 0.1)) == {
        "embeddings": 0.2, "feed_forward": {0.0}, "residual": {0.2}, "attention": {0.1}, "head": 0.2}


@pytest.mark.parametrize("p", [0.0, 0.3])
def test_other_grid_dropouts_set_the_encoder_and_leave_the_head(tiny_encoder, p):
    from ernie_tiny.finetune.loop import build_task_model

    expected = {"embeddings": p, "feed_forward": {p}, "residual": {p}, "attention": {0.1}, "head": 0.1}
    assert dropouts(build_task_model(str(tiny_encoder), load_card("cluewsc2020"), 2, p)) == expected
    assert dropouts(build_task_model(str(tiny_encoder), load_card("pd_ner"), 5, p)) == expected  # a token head
