"""Tests of camtl_jax/input_pipeline.py with the real MiniLM fast tokenizer."""
import dataclasses
import os

import numpy as np
import pytest

from camtl_jax import convert, evaluate
from camtl_jax import input_pipeline as ip
from camtl_jax.tasks import base
from camtl_jax.tasks.base import DataError, Example


def _no_reader(path, split):
  return iter(())


def _task(name, type_, labels=(), num_choices=1):
  return base.Task(name, type_, tuple(labels), ("accuracy",), {}, _no_reader,
                   num_choices=num_choices)


CLS = _task("t/cls", base.CLASSIFICATION, ("neg", "pos"))
REG = _task("t/reg", base.REGRESSION)
MC = _task("t/mc", base.MULTIPLE_CHOICE, ("0", "1", "2"), num_choices=3)
SPAN = _task("t/span", base.SPAN)
TAG = _task("t/tag", base.TAGGING, ("O", "B-PER", "I-PER", "B-LOC"))


@pytest.fixture(scope="module")
def tok(minilm_path):
  return convert.load_tokenizer(minilm_path)


def _cls_examples(n=6, pair=True):
  texts = [("a good film", "really nice"), ("bad", "awful acting and a dull plot"),
           ("fine", "")] * n
  return [Example(guid=f"data/train.tsv:{i + 2}", texts=t if pair else t[:1],
                  label=("pos", "neg", "pos")[i % 3]) for i, t in enumerate(texts[:n])]


# --------------------------------------------------------------------------------------------
# Tokenizer and encoders
# --------------------------------------------------------------------------------------------


def test_load_tokenizer_errors_on_folder_without_tokenizer(tmp_path):
  with pytest.raises(FileNotFoundError, match="no tokenizer files"):
    convert.load_tokenizer(tmp_path)


def test_classification_pairs_and_singles(tok):
  for pair in (True, False):
    s = ip.encode_split(CLS, _cls_examples(pair=pair), tok, 16, None, "train")
    a = s.arrays
    assert a["input_ids"].shape == (6, 16) and a["input_ids"].dtype == np.int32
    assert a["label"].tolist() == [1, 0, 1, 1, 0, 1]
    assert (a["length"] == a["attention_mask"].sum(1)).all()
    assert (a["input_ids"][:, 0] == tok.cls_token_id).all()
    assert a["token_type_ids"].max() == (1 if pair else 0)
    assert s.num_examples == s.num_rows == 6 and s.num_truncated == 0 and s.has_labels


def test_unknown_and_missing_labels_name_file_line_field(tok):
  exs = _cls_examples()
  bad = exs[:3] + [Example(guid="data/train.tsv:9", texts=("x", "y"), label="neutral")]
  with pytest.raises(DataError, match=r"data/train.tsv, line 9, field 'label'.*neutral") as e:
    ip.encode_split(CLS, bad, tok, 16, None, "train")
  assert (e.value.path, e.value.line, e.value.field) == ("data/train.tsv", "9", "label")
  missing = exs[:3] + [Example(guid="data/train.tsv:7", texts=("x", "y"))]
  with pytest.raises(DataError, match="line 7, field 'label'"):
    ip.encode_split(CLS, missing, tok, 16, None, "train")
  unlabelled = [Example(guid=f"t:{i}", texts=("x", "y")) for i in range(3)]
  s = ip.encode_split(CLS, unlabelled, tok, 16, None, "test")
  assert not s.has_labels and (s.arrays["label"] == 0).all()


def test_truncation_is_counted_longest_first(tok, caplog):
  long = " ".join(["word"] * 40)
  exs = [Example(guid="f:1", texts=(long, "short"), label="pos"),
         Example(guid="f:2", texts=("short", "text"), label="neg"),
         Example(guid="f:3", texts=(long, long), label="neg")]
  s = ip.encode_split(CLS, exs, tok, 16, None, "dev")
  assert s.num_truncated == 2
  assert s.arrays["length"].tolist()[0] == 16 and s.arrays["length"][1] < 16
  # longest_first: the short second segment survives whole.
  ids = s.arrays["input_ids"][0]
  assert tok.decode(ids[ids != 0]).endswith("[SEP] short [SEP]")
  assert "2 of 3 examples truncated" in caplog.text


def test_regression_standardised_with_train_stats(tok):
  exs = [Example(guid=f"f:{i}", texts=("a", "b"), label=str(v)) for i, v in enumerate([1, 2, 3, 6])]
  train = ip.encode_split(REG, exs, tok, 8, None, "train")
  assert train.target_mean == pytest.approx(3.0)
  assert train.target_std == pytest.approx(np.std([1, 2, 3, 6]))
  np.testing.assert_allclose(train.arrays["target"].mean(), 0, atol=1e-6)
  np.testing.assert_allclose(evaluate.regression_predictions(train, train.arrays["target"]),
                             [1, 2, 3, 6], rtol=1e-6)
  dev = ip.encode_split(REG, exs[:2], tok, 8, None, "dev",
                        target_stats=(train.target_mean, train.target_std))
  np.testing.assert_allclose(dev.arrays["target"], train.arrays["target"][:2])
  with pytest.raises(DataError, match="field 'label'.*not a number"):
    ip.encode_split(REG, [Example(guid="f:3", texts=("a",), label="high")], tok, 8, None, "train")


def test_multiple_choice_shapes(tok):
  exs = [Example(guid=f"f:{i}", choices=(("The sky is", "blue"), ("The sky is", "green"),
                                          ("The sky is", "made of cheese and it is very long")),
                  label=i % 3) for i in range(4)]
  s = ip.encode_split(MC, exs, tok, 12, None, "train")
  assert s.arrays["input_ids"].shape == (4, 3, 12)
  assert s.arrays["label"].tolist() == [0, 1, 2, 0]
  assert s.arrays["length"].tolist() == [12] * 4 and s.num_truncated == 4
  assert (s.arrays["attention_mask"].sum(-1)[:, 0] < 12).all()
  with pytest.raises(DataError, match="field 'choices'"):
    ip.encode_split(MC, [Example(guid="f:1", choices=(("a", "b"),), label=0)], tok, 12, None, "x")
  with pytest.raises(DataError, match="field 'label'"):
    ip.encode_split(MC, [Example(guid="f:1", choices=(("a", "b"),) * 3, label=3)], tok, 12, None,
                    "x")


def _span_examples():
  ctx = ("Anna lives in Paris. Tom lives in Berlin. Max lives in Rome and likes it a lot. "
         "Eve has a house in Oslo near the sea.")
  qa = [("Where does Tom live?", "Berlin"), ("Where does Eve live?", "Oslo"),
        ("Where does Anna live?", "Paris"), ("Where does Max live?" + " really" * 80, "Rome")]
  return [Example(guid=f"f.json:{i}", question=q, context=ctx, answers=((a, ctx.index(a)),),
                  example_id=f"id{i}") for i, (q, a) in enumerate(qa)]


def test_span_windows_positions_recover_answers(tok):
  exs = _span_examples()
  s = ip.encode_split(SPAN, exs, tok, 32, None, "train", doc_stride=8)
  a = s.arrays
  assert s.num_examples == 4 and s.num_rows > 4 and s.num_truncated == 1  # the long question
  assert sorted(set(a["example_index"].tolist())) == [0, 1, 2, 3]
  assert (np.diff(a["example_index"]) >= 0).all()
  assert a["offsets"].shape == (s.num_rows, 32, 2)
  assert (a["context_mask"][:, 0] == 1).all()  # [CLS]: the "not in this window" target
  agree = (a["offsets"][..., 0] >= 0) == (a["context_mask"] == 1)
  assert agree.sum(1).tolist() == [31] * s.num_rows  # everywhere but [CLS]
  found = set()
  for w in range(s.num_rows):
    ex = exs[a["example_index"][w]]
    st, en = a["start_position"][w], a["end_position"][w]
    if st == 0:
      assert en == 0
      continue
    assert a["context_mask"][w, st] and a["context_mask"][w, en] and st <= en
    assert ex.context[a["offsets"][w, st, 0]:a["offsets"][w, en, 1]] == ex.answers[0][0]
    found.add(a["example_index"][w])
  assert found == {0, 1, 2, 3}
  # Overlapping windows: every context token is in some window.
  covered = set()
  for w in np.flatnonzero(a["example_index"] == 0):
    covered |= set(a["offsets"][w, a["offsets"][w, :, 0] >= 0, 0].tolist())
  assert len(covered) == len(tok(exs[0].context, add_special_tokens=False)["input_ids"])


def test_span_answers_decodes_oracle_logits(tok):
  exs = _span_examples()
  s = ip.encode_split(SPAN, exs, tok, 32, None, "dev", doc_stride=8)
  n = s.num_rows
  start = np.random.default_rng(0).normal(size=(n, 32))
  end = start.copy()
  for w in range(n):
    if s.arrays["start_position"][w]:
      start[w, s.arrays["start_position"][w]] = 50
      end[w, s.arrays["end_position"][w]] = 50
  start[:, 0] = end[:, 0] = 1000  # [CLS] is never an answer
  rows = np.arange(n)
  half = n // 2  # two "batches" of different bucket lengths, plus a padding row
  answers = evaluate.span_answers(s, [rows[:half], np.append(rows[half:], -1)],
                            [start[:half], np.vstack([start[half:], start[:1]])],
                            [end[:half], np.vstack([end[half:], end[:1]])])
  assert answers == [ex.answers[0][0] for ex in exs]


@pytest.mark.parametrize("split", ["train", "dev"])
def test_demo_span_windows_label_gold_and_oracle_decodes(tok, tmp_path_factory, split):
  """The demo span task in windows of 24 tokens with stride 8 (the demo's own 48 tokens hold its
  stories whole): every labelled window's start/end tokens map back through the offsets to
  exactly the gold text, the others target [CLS] (0, 0), every example has its answer in some
  window, and one-hot logits at the labels (with [CLS] scored highest everywhere) decode to EM 1.0
  through span_answers."""
  from camtl_jax.tasks import demo, registry
  max_length, doc_stride = 24, 8
  root = demo.write_demo_data(tmp_path_factory.mktemp("demo_span"), seed=0)
  task = registry.get_task("demo/span")
  exs = list(registry.load_split(task, root, split))[:500]
  s = ip.encode_split(task, exs, tok, max_length, None, split, doc_stride=doc_stride)
  a = s.arrays
  assert s.num_rows > s.num_examples  # the demo contexts really are windowed
  labelled = a["start_position"] > 0
  assert (a["end_position"][~labelled] == 0).all()
  for w in np.flatnonzero(labelled):
    ex = exs[a["example_index"][w]]
    st, en = a["start_position"][w], a["end_position"][w]
    assert a["context_mask"][w, st] and a["context_mask"][w, en] and st <= en
    assert ex.context[a["offsets"][w, st, 0]:a["offsets"][w, en, 1]] == ex.answers[0][0]
  assert set(a["example_index"][labelled].tolist()) == set(range(len(exs)))
  start = np.zeros((s.num_rows, max_length))
  end = np.zeros_like(start)
  rows = np.flatnonzero(labelled)
  start[rows, a["start_position"][rows]] = end[rows, a["end_position"][rows]] = 50.0
  start[:, 0] = end[:, 0] = 1000.0  # the no-answer score is never decoded as an answer
  answers = evaluate.span_answers(s, np.arange(s.num_rows), start, end)
  assert answers == [ex.answers[0][0] for ex in exs]


def test_span_unlabelled_split(tok):
  exs = [dataclasses.replace(ex, answers=()) for ex in _span_examples()]
  s = ip.encode_split(SPAN, exs, tok, 32, None, "test", doc_stride=8)
  assert not s.has_labels and (s.arrays["start_position"] == 0).all()
  assert len(evaluate.span_answers(s, np.arange(s.num_rows), np.zeros((s.num_rows, 32)),
                             np.zeros((s.num_rows, 32)))) == 4


def test_token_lengths_match_untruncated_encoding(tok):
  exs = _cls_examples()
  lengths = ip.token_lengths(CLS, exs, tok)
  np.testing.assert_array_equal(lengths, ip.encode_split(CLS, exs, tok, 64, None, "x").lengths)
  truncated = ip.encode_split(CLS, exs, tok, 8, None, "x").num_truncated
  assert (ip.token_lengths(CLS, exs, tok) > 8).sum() == truncated > 0
  mc = [Example(guid="f:1", choices=(("a", "b"), ("a", "b c d"), ("a", "")), label=0)]
  assert ip.token_lengths(MC, mc, tok).tolist() == [7]
  tags = [Example(guid="f:1", words=("Johanna", "x"), tags=("O", "O"))]
  expected = len(tok(["Johanna", "x"], is_split_into_words=True)["input_ids"])
  assert ip.token_lengths(TAG, tags, tok).tolist() == [expected]


def test_tagging_first_subtoken_labels(tok):
  words = ("Johanna", "Kowalczyk", "visited", "Reykjavik", "\u200b", ".")
  tags = ("B-PER", "I-PER", "O", "B-LOC", "O", "O")
  exs = [Example(guid="f.conll:1", words=words, tags=tags),
         Example(guid="f.conll:9", words=("Tom",), tags=("B-PER",))]
  s = ip.encode_split(TAG, exs, tok, 32, None, "train")
  a = s.arrays
  enc = tok(list(words), is_split_into_words=True)
  first = [i for i, w in enumerate(enc.word_ids()) if w is not None and enc.word_ids()[i - 1] != w]
  labelled = np.flatnonzero(a["token_labels"][0] >= 0)
  assert labelled.tolist() == first
  assert [TAG.labels[t] for t in a["token_labels"][0, labelled]] == [
      tags[w] for w in a["word_ids"][0, labelled]]
  assert len(labelled) < (a["attention_mask"][0].sum() - 2)  # some words have several sub-tokens
  assert ((a["word_ids"] >= 0) == (a["token_labels"] >= 0)).all()
  # Oracle predictions map back to the tags; the zero-width word the tokenizer drops gets "O".
  preds = np.maximum(a["token_labels"], 0)
  assert evaluate.tag_predictions(s, np.arange(2), preds) == [list(tags), ["B-PER"]]
  with pytest.raises(DataError, match="f.conll, line 3, field 'tags'.*B-ORG"):
    ip.encode_split(TAG, [Example(guid="f.conll:3", words=("x",), tags=("B-ORG",))], tok, 8,
                    None, "x")


def test_tagging_truncation(tok):
  exs = [Example(guid="f:1", words=tuple(["word"] * 20), tags=("O",) * 20)]
  s = ip.encode_split(TAG, exs, tok, 8, None, "train")
  assert s.num_truncated == 1 and (s.arrays["word_ids"][0] >= 0).sum() == 6
  assert evaluate.tag_predictions(s, np.arange(1), np.zeros((1, 8), int)) == [["O"] * 20]


# --------------------------------------------------------------------------------------------
# Cache
# --------------------------------------------------------------------------------------------


def _counting_encoder(monkeypatch, type_):
  calls = []
  real = ip.ENCODERS[type_]
  monkeypatch.setitem(ip.ENCODERS, type_, lambda *a: calls.append(1) or real(*a))
  return calls


def test_cache_hit_and_invalidation(tok, tmp_path, monkeypatch, minilm_path):
  calls = _counting_encoder(monkeypatch, base.CLASSIFICATION)
  exs = _cls_examples()
  first = ip.encode_split(CLS, exs, tok, 16, tmp_path, "train")
  second = ip.encode_split(CLS, exs, tok, 16, tmp_path, "train")
  assert len(calls) == 1
  assert second.arrays.keys() == first.arrays.keys()
  for k in first.arrays:
    np.testing.assert_array_equal(second.arrays[k], first.arrays[k])
  assert (second.num_truncated, second.num_examples, second.examples) == (0, 6, exs)
  assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]
  ip.encode_split(CLS, exs, tok, 32, tmp_path, "train")  # max length
  assert len(calls) == 2
  ip.encode_split(CLS, exs[:5], tok, 16, tmp_path, "train")  # examples
  assert len(calls) == 3
  other = convert.load_tokenizer(minilm_path)
  other.add_tokens(["camtlnewtoken"])  # a different tokenizer
  assert ip.tokenizer_fingerprint(other) != ip.tokenizer_fingerprint(tok)
  ip.encode_split(CLS, exs, other, 16, tmp_path, "train")
  assert len(calls) == 4
  ip.encode_split(CLS, exs, tok, 16, tmp_path, "train")
  assert len(calls) == 4  # the first entry is still valid


def test_corrupt_cache_is_reencoded(tok, tmp_path, monkeypatch):
  calls = _counting_encoder(monkeypatch, base.CLASSIFICATION)
  ip.encode_split(CLS, _cls_examples(), tok, 16, tmp_path, "train")
  (path,) = tmp_path.iterdir()
  path.write_bytes(b"garbage")
  s = ip.encode_split(CLS, _cls_examples(), tok, 16, tmp_path, "train")
  assert len(calls) == 2 and s.num_rows == 6


# --------------------------------------------------------------------------------------------
# Candidate order, buckets, batches
# --------------------------------------------------------------------------------------------


def test_candidate_indices_pure_and_epoch_permutations():
  sizes, b = [7, 20, 3], 4
  a = ip.candidate_indices(5, 11, sizes, b)
  assert a.shape == (3, 4)
  np.testing.assert_array_equal(a, ip.candidate_indices(5, 11, sizes, b))
  assert not np.array_equal(a, ip.candidate_indices(6, 11, sizes, b))
  # The stream of task t over steps, cut into epochs, is a permutation in each epoch.
  stream = np.concatenate([ip.candidate_indices(5, s, sizes, b) for s in range(30)], axis=1)
  for t, n in enumerate(sizes):
    epochs = stream[t, :(stream.shape[1] // n) * n].reshape(-1, n)
    for order in epochs:
      assert sorted(order.tolist()) == list(range(n))
    assert len({tuple(o) for o in epochs}) > 1  # reshuffled per epoch
  # Step 1 of task 0 (positions 4..7, N=7) straddles the epoch boundary.
  e0 = np.random.default_rng([5, 0, 0]).permutation(7)
  e1 = np.random.default_rng([5, 0, 1]).permutation(7)
  np.testing.assert_array_equal(ip.candidate_indices(5, 1, sizes, b)[0],
                                [e0[4], e0[5], e0[6], e1[0]])
  np.testing.assert_allclose(ip.task_epochs(7, sizes, b), [4.0, 1.4, 28 / 3])


def test_candidate_indices_is_o_b():
  # A step far in the future costs the same as step 0: no replay of the past.
  idx = ip.candidate_indices(0, 10**12, [1000], 8)
  assert idx.shape == (1, 8) and ((0 <= idx) & (idx < 1000)).all()


def test_buckets():
  assert ip.default_buckets(128) == (32, 64, 96, 128)
  assert ip.default_buckets(100) == (32, 64, 96, 100)
  assert ip.bucket_length([3, 33], (32, 64, 128)) == 64
  assert ip.bucket_length([32], (128, 32, 64)) == 32
  assert ip.bucket_length([], (32, 64)) == 32
  with pytest.raises(ValueError, match="exceeds"):
    ip.bucket_length([129], (32, 128))


def _fake_split(task, n, lengths, max_length=64, choices=0, seed=0):
  """An EncodedSplit with synthetic arrays whose token ids encode (row, position)."""
  rng = np.random.default_rng(seed)
  lengths = np.asarray(lengths, np.int32)
  shape = (n, choices, max_length) if choices else (n, max_length)
  mask = np.broadcast_to(np.arange(max_length) < lengths.reshape((n,) + (1,) * (len(shape) - 1)),
                         shape).astype(np.int32)
  row = np.arange(n).reshape((n,) + (1,) * (len(shape) - 1))
  ids = (row * 1000 + 1 + np.arange(max_length)) * mask
  arrays = {"input_ids": ids.astype(np.int32), "token_type_ids": np.zeros(shape, np.int32),
            "attention_mask": mask, "length": lengths,
            "example_index": np.arange(n, dtype=np.int32)}
  if task.type in (base.CLASSIFICATION, base.MULTIPLE_CHOICE):
    arrays["label"] = rng.integers(0, 2, n).astype(np.int32)
  if task.type == base.TAGGING:
    arrays["token_labels"] = np.where(mask == 1, 1, -1).astype(np.int32)
  return ip.EncodedSplit(task, "train", arrays, 0, n, max_length=max_length)


def _three_splits():
  rng = np.random.default_rng(1)
  return [_fake_split(CLS, 10, rng.integers(3, 40, 10)),
          _fake_split(MC, 5, rng.integers(3, 20, 5), choices=3),
          _fake_split(TAG, 13, rng.integers(3, 64, 13))]


def test_assemble_batch_mixed_tasks():
  splits = _three_splits()
  task_ids = np.array([2, 0, 1, 0])
  rows = np.array([4, 9, 2, 0])
  length = ip.bucket_length([s.lengths[r] for s, r in zip([splits[t] for t in task_ids], rows)],
                            (32, 64))
  batch = ip.assemble_batch(splits, task_ids, rows, 3, length, [0, 10, 15])
  assert set(batch) == {"task_id", "input_ids", "token_type_ids", "attention_mask", "label",
                        "target", "start_position", "end_position", "context_mask",
                        "token_labels", "weight", "uid"}
  assert batch["input_ids"].shape == (4, 3, length) and batch["context_mask"].shape == (4, length)
  assert batch["uid"].tolist() == [19, 9, 12, 0] and batch["weight"].tolist() == [1, 1, 1, 1]
  np.testing.assert_array_equal(batch["input_ids"][1, 0], splits[0].arrays["input_ids"][9, :length])
  assert (batch["attention_mask"][[0, 1, 3], 1:] == 0).all()  # non-MC rows use choice 0 only
  np.testing.assert_array_equal(batch["input_ids"][2], splits[1].arrays["input_ids"][2, :, :length])
  assert batch["label"][1] == splits[0].arrays["label"][9] and batch["label"][0] == 0
  assert (batch["token_labels"][1:] == -1).all() and (batch["token_labels"][0] >= 0).any()
  for key, value in batch.items():
    assert value.dtype == (np.float32 if key in ("target", "weight") else np.int32), key
  with pytest.raises(ValueError, match="does not fit"):
    longest = np.array([int(np.argmax(splits[0].lengths))])
    ip.assemble_batch(splits, np.array([0]), longest, 3, 2, [0, 0, 0])


def test_candidate_loader_hosts_agree_and_concatenate():
  splits = _three_splits()
  full = ip.CandidateLoader(splits, 8, seed=3)
  assert full.total_examples == 28 and full.uid_offsets.tolist() == [0, 10, 15]
  assert full.num_choices == 3 and full.buckets == (32, 64)
  for step in (0, 1, 7):
    g = full.candidates(step)
    assert g["input_ids"].shape[:3] == (3, 8, 3)
    assert g["task_id"].tolist() == [[0] * 8, [1] * 8, [2] * 8]
    idx = full.indices(step)
    np.testing.assert_array_equal(g["uid"], idx + full.uid_offsets[:, None])
    longest = max(s.lengths[i].max() for s, i in zip(splits, idx))
    assert g["input_ids"].shape[-1] == ip.bucket_length([longest], (32, 64))
    hosts = [ip.CandidateLoader(splits, 8, seed=3, process_index=p, process_count=4)
             .candidates(step) for p in range(4)]
    for key in g:
      assert {h[key].shape for h in hosts} == {g[key][:, :2].shape}
      np.testing.assert_array_equal(np.concatenate([h[key] for h in hosts], axis=1), g[key])
  with pytest.raises(ValueError, match="not divisible"):
    ip.CandidateLoader(splits, 8, seed=3, process_index=0, process_count=3)


@pytest.mark.parametrize("process_count", [1, 2])
def test_eval_batches_cover_every_row_once(process_count):
  split = _fake_split(TAG, 13, np.random.default_rng(2).integers(3, 64, 13))
  per_host = [list(ip.eval_batches(split, 2, 4, num_choices=1, process_index=p,
                                   process_count=process_count)) for p in range(process_count)]
  assert len({len(h) for h in per_host}) == 1 and len(per_host[0]) == 4
  seen = []
  for step in zip(*per_host):
    assert len({b["input_ids"].shape for b, _ in step}) == 1  # hosts agree on the bucket
    for batch, rows in step:
      assert batch["input_ids"].shape[0] == 4 // process_count
      assert (batch["task_id"] == 2).all()
      np.testing.assert_array_equal(batch["weight"], (rows >= 0).astype(np.float32))
      np.testing.assert_array_equal(batch["uid"], rows)
      for slot, row in enumerate(rows):
        if row >= 0:
          seen.append(row)
          length = batch["input_ids"].shape[-1]
          np.testing.assert_array_equal(batch["input_ids"][slot, 0],
                                        split.arrays["input_ids"][row, :length])
  assert sorted(seen) == list(range(13))
