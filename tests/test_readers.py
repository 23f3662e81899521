"""Readers: the real files of ../shared/data (official row counts and label sets), the formats
that are not there (QQP, MNLI, SciTail, SNLI, MRQA, SQuAD, ReCoRD; spec-file tsv and jsonl) on
small files written in their official layout, and bad input (errors that name the file, the line
and the field)."""
import gzip
import json
import logging

import pytest

from camtl_jax.tasks import readers, registry, spec
from camtl_jax.tasks.base import DataError

# (task, split, rows) from ../shared/data/README.md.
OFFICIAL_ROWS = [
    ("glue/cola", "train", 8551), ("glue/cola", "dev", 1043), ("glue/cola", "test", 1063),
    ("glue/sst2", "train", 67349), ("glue/sst2", "dev", 872), ("glue/sst2", "test", 1821),
    ("glue/mrpc", "train", 3668), ("glue/mrpc", "dev", 408), ("glue/mrpc", "test", 1725),
    ("glue/stsb", "train", 5749), ("glue/stsb", "dev", 1500), ("glue/stsb", "test", 1379),
    ("glue/rte", "train", 2490), ("glue/rte", "dev", 277), ("glue/rte", "test", 3000),
    ("glue/wnli", "train", 635), ("glue/wnli", "dev", 71), ("glue/wnli", "test", 146),
    ("glue/qnli", "dev", 5463), ("glue/qnli", "test", 5463),
    ("superglue/rte", "train", 2490), ("superglue/rte", "val", 277),
    ("superglue/rte", "test", 3000),
    ("superglue/wsc", "train", 554), ("superglue/wsc", "val", 104), ("superglue/wsc", "test", 146),
    ("superglue/cb", "train", 250), ("superglue/cb", "val", 56), ("superglue/cb", "test", 250),
    ("superglue/copa", "train", 400), ("superglue/copa", "val", 100),
    ("superglue/copa", "test", 500),
    ("superglue/wic", "val", 638), ("superglue/boolq", "val", 3270),
    ("superglue/multirc", "val", 4848),  # answers (83 passages, 953 questions: checked below)
    ("wnut17", "train", 3394), ("wnut17", "dev", 1009),
]


@pytest.fixture(scope="module")
def loaded(shared_data):
  """Every split of OFFICIAL_ROWS, read once (about 1 s)."""
  return {(t, s): registry.load_split(t, shared_data, s) for t, s, _ in OFFICIAL_ROWS}


@pytest.mark.parametrize("task_name,split,rows", OFFICIAL_ROWS)
def test_official_row_counts(loaded, task_name, split, rows):
  assert len(loaded[task_name, split]) == rows


@pytest.mark.parametrize("task_name,split,rows", OFFICIAL_ROWS)
def test_label_sets_are_the_official_ones(loaded, task_name, split, rows):
  task = registry.get_task(task_name)
  examples = loaded[task_name, split]
  if task.type == "tagging":
    assert {t for ex in examples for t in ex.tags} == set(task.labels)
  elif split == "test":
    assert {ex.label for ex in examples} == {None}
  elif task.type == "regression":
    assert all(0.0 <= ex.label <= 5.0 for ex in examples)
  elif task.type == "multiple_choice":
    assert {ex.label for ex in examples} == {0, 1}
  else:
    assert {ex.label for ex in examples} == set(task.labels)


def test_glue_example_ids(loaded):
  # Test files: the "index" column (what the submission needs); headerless/indexless: row number.
  assert [ex.example_id for ex in loaded["glue/rte", "test"]] == list(range(3000))
  assert [ex.example_id for ex in loaded["glue/cola", "train"]][:3] == [0, 1, 2]
  assert [ex.example_id for ex in loaded["glue/mrpc", "test"]] == list(range(1725))


def test_mrpc_byte_order_mark(shared_data, loaded):
  assert (shared_data / "glue/MRPC/train.tsv").read_bytes()[:3] == b"\xef\xbb\xbf"
  first = loaded["glue/mrpc", "train"][0]
  assert first.label == "1" and first.texts[0].startswith("Amrozi accused his brother")
  assert first.guid.endswith("train.tsv:2")
  assert not any("\ufeff" in t for ex in loaded["glue/mrpc", "dev"] for t in ex.texts)


def test_cola_headerless_and_quotes(loaded):
  first = loaded["glue/cola", "train"][0]
  assert first.texts == ("Our friends won't buy this analysis, let alone the next one we propose.",)
  assert first.label == "1"
  # Stray quotes are text (quoting disabled): no row swallowed the next one.
  assert all("\n" not in ex.texts[0] for ex in loaded["glue/cola", "train"])


def test_stsb_scores_are_floats(loaded):
  first = loaded["glue/stsb", "train"][0]
  assert first.label == 5.0 and first.texts == ("A plane is taking off.",
                                                 "An air plane is taking off.")


def test_wnut17_whitespace_only_separators(shared_data, loaded):
  lines = (shared_data / "wnut17/wnut17train.conll").read_text().split("\n")
  whitespace_only = sum(1 for line in lines if line and not line.strip())
  assert whitespace_only == 2394
  train = loaded["wnut17", "train"]
  assert sum(len(ex.words) for ex in train) == 62730  # token lines
  assert all(w.strip() == w and w for ex in train for w in ex.words)
  assert train[0].words[:3] == ("@paulwalk", "It", "'s")
  assert train[0].tags[14:17] == ("B-location", "I-location", "I-location")
  assert sum(len(ex.words) for ex in loaded["wnut17", "dev"]) == 15733


def test_superglue_conversions(loaded):
  copa = loaded["superglue/copa", "val"][0]
  assert copa.choices == (
      ("The man turned on the faucet. What happened as a result?", "The toilet filled with water."),
      ("The man turned on the faucet. What happened as a result?", "Water flowed from the spout."))
  assert copa.label == 1
  wic = loaded["superglue/wic", "val"][1]
  assert wic.texts == ("Businessmen of every *stripe* joined in opposition to the proposal.",
                       "They earned their *stripes* in Kuwait.")
  wsc = loaded["superglue/wsc", "val"][1]
  assert wsc.texts[0].startswith("*Mr. Moncrieff* visited Chester")
  assert "requires #his# financial support." in wsc.texts[0]
  multirc = loaded["superglue/multirc", "val"]
  assert multirc[0].example_id == (0, 0, 0) and multirc[0].label == "0"
  assert multirc[0].texts[1] == ("Would the mass of a baseball affect how much force you have to "
                                 "use to pick it up? No")
  assert len({ex.example_id[0] for ex in multirc}) == 83
  assert len({ex.example_id[:2] for ex in multirc}) == 953
  boolq = loaded["superglue/boolq", "val"][0]
  assert boolq.texts[0] == "does ethanol take more energy make that produces"
  assert boolq.label == "false"


def test_wic_original_format(shared_data):
  for split, rows in (("train", 5428), ("dev", 638)):
    path = shared_data / f"superglue/WiC/original/{split}/{split}.data.txt"
    examples = list(readers.read_wic_original(str(path), split))
    assert len(examples) == rows
    assert {ex.label for ex in examples} == {"true", "false"}
  first = list(readers.read_wic_original(
      str(shared_data / "superglue/WiC/original/train/train.data.txt"), "train"))[0]
  assert first.texts == ("You must *carry* your camping gear .",
                         "Sound *carries* well over water .")
  assert first.label == "false"


# ----------------------------------------------------------------------------------------------
# Formats not in shared/data, on small files in their official layout.


def write_lines(path, lines):
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
  return path


def tsv(*fields):
  return "\t".join(fields)


def test_qqp(tmp_path):
  write_lines(tmp_path / "glue/QQP/train.tsv", [
      tsv("id", "qid1", "qid2", "question1", "question2", "is_duplicate"),
      tsv("133273", "213221", "213222", 'How is the "life" of a math student?', "Which is best?",
          "0"),
      tsv("402555", "536040", "536041", "How do I control my horny emotions?", "How do you?", "1"),
  ])
  write_lines(tmp_path / "glue/QQP/test.tsv", [
      tsv("id", "question1", "question2"), tsv("0", "Why?", "Why not?")])
  train = registry.load_split("glue/qqp", tmp_path, "train")
  assert [(ex.example_id, ex.label) for ex in train] == [(133273, "0"), (402555, "1")]
  assert train[0].texts[0] == 'How is the "life" of a math student?'
  test = registry.load_split("glue/qqp", tmp_path, "test")
  assert test[0].texts == ("Why?", "Why not?") and test[0].label is None


MNLI_TRAIN_HEADER = ["index", "promptID", "pairID", "genre", "sentence1_binary_parse",
                     "sentence2_binary_parse", "sentence1_parse", "sentence2_parse", "sentence1",
                     "sentence2", "label1", "gold_label"]
MNLI_DEV_HEADER = MNLI_TRAIN_HEADER[:10] + ["label1", "label2", "label3", "label4", "label5",
                                            "gold_label"]


def test_mnli_columns_by_header_name(tmp_path):
  d = tmp_path / "glue/MNLI"
  write_lines(d / "train.tsv", [tsv(*MNLI_TRAIN_HEADER), tsv(
      "0", "31193", "31193n", "government", "( ( Conceptually ...", "( ( ( Product ...", "(ROOT",
      "(ROOT", "Conceptually cream skimming has two basic dimensions.",
      "Product and geography are what make cream skimming work. ", "neutral", "neutral")])
  write_lines(d / "dev_matched.tsv", [tsv(*MNLI_DEV_HEADER), tsv(
      "0", "63735", "63735n", "slate", "(", "(", "(", "(", "The new rights are nice enough",
      "Everyone really likes the newest benefits ", "neutral", "entailment", "neutral",
      "neutral", "neutral", "neutral")])
  write_lines(d / "dev_mismatched.tsv", [tsv(*MNLI_DEV_HEADER), tsv(
      "0", "1", "1c", "letters", "(", "(", "(", "(", "A", "B", "contradiction", "", "", "", "",
      "contradiction")])
  write_lines(d / "test_matched.tsv", [tsv(*MNLI_TRAIN_HEADER[:10]), tsv(
      "0", "31493", "31493", "travel", "(", "(", "(", "(", "Hierbas, ans seco.", "Hierbas is.")])
  train = registry.load_split("glue/mnli", tmp_path, "train")
  assert train[0].texts == ("Conceptually cream skimming has two basic dimensions.",
                            "Product and geography are what make cream skimming work. ")
  assert train[0].label == "neutral"
  assert registry.load_split("glue/mnli", tmp_path, "dev_matched")[0].label == "neutral"
  assert registry.load_split("glue/mnli", tmp_path, "dev_mismatched")[0].label == "contradiction"
  test = registry.load_split("glue/mnli", tmp_path, "test_matched")[0]
  assert test.label is None and test.example_id == 0
  with pytest.raises(DataError, match=r"test_mismatched.tsv.*expected test_mismatched.tsv in"):
    registry.load_split("glue/mnli", tmp_path, "test_mismatched")


def test_scitail_tsv_and_snli_format(tmp_path):
  d = tmp_path / "scitail/SciTailV1.1"
  write_lines(d / "tsv_format/scitail_1.0_dev.tsv", [
      tsv("Pluto rotates once on its axis every 6.39 Earth days.",
          "Earth rotates on its axis once times in one day.", "neutral"),
      tsv("Water freezes at 0 degrees.", "Water becomes ice at 0 degrees.", "entails")])
  dev = registry.load_split("scitail", tmp_path, "dev")
  assert [ex.label for ex in dev] == ["neutral", "entails"] and dev[1].example_id == 1
  jsonl = write_lines(d / "snli_format/scitail_1.0_dev.txt", [json.dumps(
      {"answer": "ice", "sentence1": "Water freezes at 0 degrees.", "sentence2": "Water is ice.",
       "annotator_labels": ["entails"], "question": "?", "gold_label": "entails"})])
  examples = list(readers.read_jsonl_pairs(
      str(jsonl), "dev", text_keys=("sentence1", "sentence2"), label_key="gold_label",
      labels=("entails", "neutral"), id_key=None))
  assert examples[0].texts == ("Water freezes at 0 degrees.", "Water is ice.")
  assert examples[0].label == "entails"


def snli_line(gold, pair_id):
  return json.dumps({"annotator_labels": ["neutral"], "captionID": "3416050480.jpg#4",
                     "gold_label": gold, "pairID": pair_id, "sentence1": "A person on a horse.",
                     "sentence1_binary_parse": "( ( A person )",
                     "sentence2": "A person is outdoors."})


def test_snli_no_consensus_rows_are_counted_skips(tmp_path, caplog):
  write_lines(tmp_path / "snli/snli_1.0/snli_1.0_dev.jsonl", [
      snli_line("neutral", "a"), snli_line("-", "b"), snli_line("entailment", "c"),
      snli_line("-", "d")])
  with caplog.at_level(logging.INFO):
    examples, skipped = registry.load_split_with_report("snli", tmp_path, "dev")
  assert [ex.example_id for ex in examples] == ["a", "c"]
  assert skipped == {"no_gold_label": 2}
  assert "left out 2 row(s)" in caplog.text
  # Without the task's policy, "-" is an unknown label.
  with pytest.raises(DataError, match=r"snli_1.0_dev.jsonl, line 2, field 'gold_label': unknown "
                     r"label '-'; allowed labels: \['entailment', 'neutral', 'contradiction'\]"):
    list(readers.read_jsonl_pairs(str(tmp_path / "snli/snli_1.0/snli_1.0_dev.jsonl"), "dev",
                                  text_keys=("sentence1", "sentence2"), label_key="gold_label",
                                  labels=registry.NLI3, id_key="pairID"))


MRQA_CONTEXT = "The Eiffel Tower is in Paris. It was built in 1889."


def write_mrqa(path, qas):
  path.parent.mkdir(parents=True, exist_ok=True)
  with gzip.open(path, "wt", encoding="utf-8") as f:
    f.write(json.dumps({"header": {"dataset": "SQuAD", "split": "dev"}}) + "\n")
    f.write(json.dumps({"id": "c1", "context": MRQA_CONTEXT, "context_tokens": [["The", 0]],
                        "qas": qas}) + "\n")


def mrqa_qa(qid, answers, spans):
  return {"qid": qid, "question": "Where is it?", "question_tokens": [["Where", 0]],
          "answers": answers,
          "detected_answers": [{"text": answers[0], "char_spans": spans,
                                "token_spans": [[0, 0]] * len(spans)}]}


def test_mrqa_jsonl_gz(tmp_path):
  write_mrqa(tmp_path / "mrqa/dev/SQuAD.jsonl.gz", [
      mrqa_qa("q1", ["paris", "in Paris"], [[23, 27]]),
      mrqa_qa("q2", ["1889"], [[46, 49], [46, 49]])])
  dev = registry.load_split("mrqa/squad", tmp_path, "dev")
  assert [ex.example_id for ex in dev] == ["q1", "q2"]
  # Spans are the context's own text; the metric's gold strings are the qa's "answers".
  assert dev[0].answers == (("Paris", 23),) and dev[0].answer_texts == ("paris", "in Paris")
  assert dev[1].answers == (("1889", 46),) and dev[1].context == MRQA_CONTEXT


def test_corrupt_gzip(tmp_path):
  path = tmp_path / "mrqa/dev/SQuAD.jsonl.gz"
  path.parent.mkdir(parents=True)
  path.write_bytes(b"not gzip\n")
  with pytest.raises(DataError, match=r"SQuAD.jsonl.gz, line 1: cannot read the file: Not a "
                     r"gzipped file"):
    registry.load_split("mrqa/squad", tmp_path, "dev")


def test_mrqa_needs_its_header(tmp_path):
  path = tmp_path / "mrqa/dev/SQuAD.jsonl.gz"
  path.parent.mkdir(parents=True)
  with gzip.open(path, "wt") as f:
    f.write(json.dumps({"context": MRQA_CONTEXT, "qas": []}) + "\n")
  with pytest.raises(DataError, match=r"SQuAD.jsonl.gz, line 1, field 'header'"):
    registry.load_split("mrqa/squad", tmp_path, "dev")


def squad_document(answer_start=23):
  return {"version": "1.1", "data": [{"title": "Eiffel", "paragraphs": [{
      "context": MRQA_CONTEXT, "qas": [
          {"id": "5733be", "question": "Where is the tower?",
           "answers": [{"text": "Paris", "answer_start": answer_start},
                       {"text": "in Paris", "answer_start": 20},
                       {"text": "Paris", "answer_start": answer_start}]}]}]}]}


def test_squad_v1(tmp_path):
  (tmp_path / "squad").mkdir()
  (tmp_path / "squad/dev-v1.1.json").write_text(json.dumps(squad_document()))
  [ex] = registry.load_split("squad_v1", tmp_path, "dev")
  assert ex.example_id == "5733be" and ex.question == "Where is the tower?"
  assert ex.answers == (("Paris", 23), ("in Paris", 20))
  assert ex.answer_texts == ("Paris", "in Paris", "Paris")


def test_squad_bad_offset_names_the_record(tmp_path):
  (tmp_path / "squad").mkdir()
  (tmp_path / "squad/dev-v1.1.json").write_text(json.dumps(squad_document(answer_start=22)))
  with pytest.raises(DataError, match=r"field 'data\[0\].paragraphs\[0\].qas\[0\].answers\[0\]': "
                     r"answer text 'Paris' differs from the context"):
    registry.load_split("squad_v1", tmp_path, "dev")


def test_record_as_span_task(tmp_path):
  passage = "Paris (CNN) -- The @highlight\nFrance wins. Macron said France won."
  write_lines(tmp_path / "superglue/ReCoRD/val.jsonl", [json.dumps({
      "source": "CNN", "idx": 0,
      "passage": {"text": passage, "entities": [{"start": 0, "end": 4}, {"start": 30, "end": 35}]},
      "qas": [{"query": "@placeholder won the cup.", "idx": 7,
               "answers": [{"start": 30, "end": 35, "text": "France"},
                           {"start": 55, "end": 60, "text": "France"}]}]})])
  [ex] = registry.load_split("superglue/record", tmp_path, "val")
  assert ex.example_id == 7 and ex.question == "@placeholder won the cup."
  assert ex.answers == (("France", 30), ("France", 55)) and ex.answer_texts == ("France",)


def write_splits(folder, extension, lines):
  """The same lines in folder/train.extension and folder/dev.extension (a spec task needs both
  splits); a spec entry's files."""
  return {split: str(write_lines(folder / f"{split}.{extension}", lines))
          for split in ("train", "dev")}


def spec_task(folder, **entry):
  """The task of a one-task spec file written in folder."""
  path = folder / "spec.json"
  path.write_text(json.dumps({"tasks": [entry]}), encoding="utf-8")
  [task] = spec.load_spec(path)
  return task


def test_spec_file_tsv_and_jsonl(tmp_path):
  mine = dict(name="mine", type="classification", text_fields=["review"], label_field="stars",
              id_field="id", files=write_splits(tmp_path / "mine", "tsv", [
                  tsv("id", "review", "stars"), tsv("r1", "great", "pos"),
                  tsv("r2", "bad", "neg")]))
  task = spec_task(tmp_path, **mine, labels=["neg", "pos"])
  assert [(ex.texts, ex.label, ex.example_id) for ex in registry.load_split(
      task, tmp_path, "train")] == [(("great",), "pos", "r1"), (("bad",), "neg", "r2")]
  with pytest.raises(spec.SpecError, match="needs >= 2 labels"):
    spec_task(tmp_path, **mine, labels=["pos"])
  task = spec_task(tmp_path, name="sim", type="regression", text_fields=["a", "b"],
                   label_field="score", files=write_splits(tmp_path / "sim", "jsonl", [
                       json.dumps({"a": "x", "b": "y", "score": 3}),
                       json.dumps({"a": "x", "b": "z", "score": 0.5})]))
  assert task.metrics == ("pearson", "spearman")
  # The spec's paths are absolute: the data root is not read.
  assert [ex.label for ex in registry.load_split(task, "/unused", "dev")] == [3.0, 0.5]


# ----------------------------------------------------------------------------------------------
# Bad input: the message names the file, the line and the field.


def rte_file(tmp_path, *rows, name="dev.tsv"):
  return write_lines(tmp_path / "glue/RTE" / name,
                     [tsv("index", "sentence1", "sentence2", "label"), *rows])


def test_wrong_column_count(tmp_path):
  rte_file(tmp_path, tsv("0", "A.", "B.", "entailment"), tsv("1", "A.", "entailment"))
  with pytest.raises(DataError, match=r"RTE/dev.tsv, line 3: expected 4 tab-separated fields "
                     r"\(\['index', 'sentence1', 'sentence2', 'label'\]\), found 3"):
    registry.load_split("glue/rte", tmp_path, "dev")


def test_unknown_label(tmp_path):
  rte_file(tmp_path, tsv("0", "A.", "B.", "entailment"), tsv("1", "A.", "B.", "entails"))
  with pytest.raises(DataError, match=r"RTE/dev.tsv, line 3, field 'label': unknown label "
                     r"'entails'; allowed labels: \['entailment', 'not_entailment'\]"):
    registry.load_split("glue/rte", tmp_path, "dev")


def test_skip_invalid_counts_and_keeps_the_rest(tmp_path):
  rte_file(tmp_path, tsv("0", "A.", "B.", "entailment"), tsv("1", "A.", "entailment"),
           tsv("2", "A.", "B.", "entails"), tsv("3", "C.", "D.", "not_entailment"))
  examples, skipped = registry.load_split_with_report("glue/rte", tmp_path, "dev",
                                                      skip_invalid=True)
  assert [ex.example_id for ex in examples] == [0, 3] and skipped == {"invalid": 2}


def test_empty_and_header_only_files(tmp_path):
  (tmp_path / "glue/RTE").mkdir(parents=True)
  (tmp_path / "glue/RTE/dev.tsv").write_bytes(b"")
  with pytest.raises(DataError, match=r"RTE/dev.tsv: empty file"):
    registry.load_split("glue/rte", tmp_path, "dev")
  rte_file(tmp_path)
  with pytest.raises(DataError, match=r"RTE/dev.tsv: the file has a header but no rows"):
    registry.load_split("glue/rte", tmp_path, "dev")
  (tmp_path / "glue/RTE/dev.tsv").write_text("\n\n  \n")
  with pytest.raises(DataError, match=r"RTE/dev.tsv: empty file"):
    registry.load_split("glue/rte", tmp_path, "dev")


def test_invalid_utf8_names_the_line(tmp_path):
  path = rte_file(tmp_path, tsv("0", "A.", "B.", "entailment"))
  path.write_bytes(path.read_bytes() + b"1\tCaf\xe9 au lait.\tB.\tentailment\n")
  with pytest.raises(DataError, match=r"RTE/dev.tsv, line 3: invalid UTF-8 at byte 5"):
    registry.load_split("glue/rte", tmp_path, "dev")


def test_missing_split_file_and_unknown_split(tmp_path):
  with pytest.raises(DataError, match=r"glue/CoLA/train.tsv: missing file for glue/cola split "
                     r"'train': expected train.tsv in .*glue/CoLA"):
    registry.load_split("glue/cola", tmp_path, "train")
  with pytest.raises(ValueError,
                     match=r"no split 'validation'; splits: \['train', 'dev', 'test'\]"):
    registry.load_split("glue/cola", tmp_path, "validation")


def test_blank_line_between_rows(tmp_path):
  rte_file(tmp_path, tsv("0", "A.", "B.", "entailment"), "", tsv("1", "A.", "B.", "entailment"),
           "", "")  # trailing blank lines are fine
  with pytest.raises(DataError, match=r"RTE/dev.tsv, line 3: blank line between records"):
    registry.load_split("glue/rte", tmp_path, "dev")


def test_stsb_score_must_be_a_number_in_range(tmp_path):
  header = tsv("index", "genre", "filename", "year", "old_index", "source1", "source2",
               "sentence1", "sentence2", "score")
  write_lines(tmp_path / "glue/STS-B/dev.tsv", [header, tsv("0", "g", "f", "y", "0", "n", "n", "A",
                                                            "B", "high")])
  with pytest.raises(DataError,
                     match=r"STS-B/dev.tsv, line 2, field 'score': not a number: 'high'"):
    registry.load_split("glue/stsb", tmp_path, "dev")
  write_lines(tmp_path / "glue/STS-B/dev.tsv", [header, tsv("0", "g", "f", "y", "0", "n", "n", "A",
                                                            "B", "5.5")])
  with pytest.raises(DataError, match=r"field 'score': score 5.5 outside \[0.0, 5.0\]"):
    registry.load_split("glue/stsb", tmp_path, "dev")


def test_missing_header_column(tmp_path):
  write_lines(tmp_path / "glue/RTE/dev.tsv", [tsv("index", "premise", "sentence2", "label"),
                                              tsv("0", "A.", "B.", "entailment")])
  with pytest.raises(DataError, match=r"RTE/dev.tsv, line 1, field 'sentence1': missing column"):
    registry.load_split("glue/rte", tmp_path, "dev")


def cb_file(tmp_path, *lines):
  return write_lines(tmp_path / "superglue/CB/val.jsonl", list(lines))


def test_bad_json_line(tmp_path):
  cb_file(tmp_path, json.dumps({"premise": "A", "hypothesis": "B", "label": "neutral", "idx": 0}),
          '{"premise": "A", "hypothesis": "B", "label": "neutral", "idx": 1')
  with pytest.raises(DataError, match=r"CB/val.jsonl, line 2: invalid JSON"):
    registry.load_split("superglue/cb", tmp_path, "val")


def test_missing_json_key(tmp_path):
  cb_file(tmp_path, json.dumps({"premise": "A", "label": "neutral", "idx": 0}))
  with pytest.raises(DataError, match=r"CB/val.jsonl, line 1, field 'hypothesis': missing key"):
    registry.load_split("superglue/cb", tmp_path, "val")
  cb_file(tmp_path, json.dumps({"premise": "A", "hypothesis": "B", "idx": 0}))
  with pytest.raises(DataError, match=r"CB/val.jsonl, line 1, field 'label': missing label"):
    registry.load_split("superglue/cb", tmp_path, "val")


def test_multirc_errors_name_the_nested_field(tmp_path):
  write_lines(tmp_path / "superglue/MultiRC/val.jsonl", [json.dumps({"idx": 0, "passage": {
      "text": "P", "questions": [{"idx": 0, "question": "Q", "answers": [
          {"idx": 0, "text": "A", "label": 0}, {"idx": 1, "text": "B", "label": 2}]}]}})])
  with pytest.raises(DataError, match=r"MultiRC/val.jsonl, line 1, field "
                     r"'passage.questions\[0\].answers\[1\].label': unknown label '2'"):
    registry.load_split("superglue/multirc", tmp_path, "val")


def test_conll_errors(tmp_path):
  path = write_lines(tmp_path / "wnut17/emerging.dev.conll",
                     ["Paris\tB-location", "is\tO", " \t ", "nice\tO", "x\tB-city"])
  with pytest.raises(DataError, match=r"emerging.dev.conll, line 5, field 'tag': unknown label "
                     r"'B-city'"):
    registry.load_split("wnut17", tmp_path, "dev")
  path.write_text("Paris B-location\n")
  with pytest.raises(DataError, match=r"emerging.dev.conll, line 1: expected 'token<TAB>tag'"):
    registry.load_split("wnut17", tmp_path, "dev")


def test_wic_original_gold_file_must_match(tmp_path):
  data = write_lines(tmp_path / "train.data.txt", [tsv("go", "V", "0-1", "Go now .", "I go .")])
  with pytest.raises(DataError, match=r"train.gold.txt: missing gold file"):
    list(readers.read_wic_original(str(data), "train"))
  write_lines(tmp_path / "train.gold.txt", ["T", "F"])
  with pytest.raises(DataError, match=r"train.gold.txt, line 2: 2 gold lines for 1 data lines"):
    list(readers.read_wic_original(str(data), "train"))


# ----------------------------------------------------------------------------------------------
# Empty text: every reader refuses an empty or whitespace-only text field, naming file/line/field.


def assert_empty_text(load, path_suffix, line, field, whitespace=False):
  """load() raises the empty-text DataError for path_suffix, line, field."""
  with pytest.raises(DataError) as info:
    load()
  err = info.value
  assert err.path.endswith(path_suffix) and (err.line, err.field) == (line, field), str(err)
  where = err.path + ("" if line is None else f", line {line}") + f", field '{field}'"
  if whitespace:
    assert str(err).startswith(f"{where}: empty text (only whitespace: "), str(err)
  else:
    assert str(err) == f"{where}: empty text"


@pytest.mark.parametrize("sentence1", ["", "   "])
def test_glue_tsv_empty_text(tmp_path, sentence1):
  write_lines(tmp_path / "glue/RTE/train.tsv", [
      tsv("index", "sentence1", "sentence2", "label"), tsv("0", "A.", "B.", "entailment"),
      tsv("1", sentence1, "B.", "entailment"), tsv("2", "C.", "D.", "not_entailment")])
  assert_empty_text(lambda: registry.load_split("glue/rte", tmp_path, "train"),
                    "glue/RTE/train.tsv", 3, "sentence1", whitespace=bool(sentence1))
  # Refused, not dropped: skip_invalid counts it as invalid.
  examples, skipped = registry.load_split_with_report("glue/rte", tmp_path, "train",
                                                      skip_invalid=True)
  assert [ex.example_id for ex in examples] == [0, 2] and skipped == {"invalid": 1}


def test_glue_tsv_headerless_and_test_split_empty_text(tmp_path):
  write_lines(tmp_path / "glue/CoLA/dev.tsv", [tsv("gj04", "1", "", "Fine."),
                                               tsv("gj04", "1", "", "")])
  assert_empty_text(lambda: registry.load_split("glue/cola", tmp_path, "dev"),
                    "glue/CoLA/dev.tsv", 2, "sentence")
  write_lines(tmp_path / "glue/RTE/test.tsv", [tsv("index", "sentence1", "sentence2"),
                                               tsv("0", "A.", " ")])
  assert_empty_text(lambda: registry.load_split("glue/rte", tmp_path, "test"),
                    "glue/RTE/test.tsv", 2, "sentence2", whitespace=True)


SUPERGLUE_EMPTY = [  # (task, file, a valid record, path to the text made empty, error field)
    ("superglue/cb", "CB/val.jsonl",
     {"premise": "A", "hypothesis": "B", "label": "neutral", "idx": 0}, ("hypothesis",),
     "hypothesis"),
    ("superglue/rte", "RTE/val.jsonl",
     {"premise": "A", "hypothesis": "B", "label": "entailment", "idx": 0}, ("premise",),
     "premise"),
    ("superglue/boolq", "BoolQ/val.jsonl",
     {"question": "q", "passage": "P", "label": True, "idx": 0}, ("passage",), "passage"),
    ("superglue/copa", "COPA/val.jsonl",
     {"premise": "A.", "choice1": "B.", "choice2": "C.", "question": "cause", "label": 0,
      "idx": 0}, ("choice2",), "choice2"),
    ("superglue/wic", "WiC/val.jsonl",
     {"word": "go", "sentence1": "go now", "sentence2": "I go", "idx": 0, "label": True,
      "start1": 0, "end1": 2, "start2": 2, "end2": 4}, ("word",), "word"),
    ("superglue/wic", "WiC/val.jsonl",
     {"word": "go", "sentence1": "go now", "sentence2": "I go", "idx": 0, "label": True,
      "start1": 0, "end1": 2, "start2": 2, "end2": 4}, ("sentence2",), "sentence2"),
    ("superglue/wsc", "WSC/val.jsonl",
     {"text": "Mark said he left.", "idx": 0, "label": True,
      "target": {"span1_index": 0, "span1_text": "Mark", "span2_index": 2, "span2_text": "he"}},
     ("target", "span1_text"), "target.span1_text"),
    ("superglue/wsc", "WSC/val.jsonl",
     {"text": "Mark said he left.", "idx": 0, "label": True,
      "target": {"span1_index": 0, "span1_text": "Mark", "span2_index": 2, "span2_text": "he"}},
     ("text",), "text"),
    ("superglue/multirc", "MultiRC/val.jsonl",
     {"idx": 0, "passage": {"text": "P", "questions": [{"idx": 0, "question": "Q", "answers": [
         {"idx": 0, "text": "A", "label": 0}, {"idx": 1, "text": "B", "label": 1}]}]}},
     ("passage", "questions", 0, "answers", 1, "text"), "passage.questions[0].answers[1].text"),
    ("superglue/multirc", "MultiRC/val.jsonl",
     {"idx": 0, "passage": {"text": "P", "questions": [{"idx": 0, "question": "Q", "answers": [
         {"idx": 0, "text": "A", "label": 0}]}]}},
     ("passage", "questions", 0, "question"), "passage.questions[0].question"),
    ("superglue/multirc", "MultiRC/val.jsonl",
     {"idx": 0, "passage": {"text": "P", "questions": [{"idx": 0, "question": "Q", "answers": [
         {"idx": 0, "text": "A", "label": 0}]}]}}, ("passage", "text"), "passage.text"),
    ("superglue/record", "ReCoRD/val.jsonl",
     {"idx": 0, "passage": {"text": "France won."},
      "qas": [{"query": "@placeholder won", "idx": 7,
               "answers": [{"start": 0, "end": 5, "text": "France"}]}]},
     ("qas", 0, "query"), "qas[0].query"),
    ("superglue/record", "ReCoRD/val.jsonl",
     {"idx": 0, "passage": {"text": "France won."},
      "qas": [{"query": "@placeholder won", "idx": 7,
               "answers": [{"start": 0, "end": 5, "text": "France"}]}]},
     ("qas", 0, "answers", 0, "text"), "qas[0].answers[0].text"),
    ("superglue/record", "ReCoRD/val.jsonl",
     {"idx": 0, "passage": {"text": "France won."},
      "qas": [{"query": "@placeholder won", "idx": 7,
               "answers": [{"start": 0, "end": 5, "text": "France"}]}]},
     ("passage", "text"), "passage.text"),
]


@pytest.mark.parametrize("task_name,file,record,key_path,field", SUPERGLUE_EMPTY,
                         ids=[f"{t}-{f}" for t, _, _, _, f in SUPERGLUE_EMPTY])
def test_superglue_jsonl_empty_text(tmp_path, task_name, file, record, key_path, field):
  bad = json.loads(json.dumps(record))
  where = bad
  for key in key_path[:-1]:
    where = where[key]
  where[key_path[-1]] = " \t"
  write_lines(tmp_path / "superglue" / file, [json.dumps(record), json.dumps(bad)])
  assert_empty_text(lambda: registry.load_split(task_name, tmp_path, "val"),
                    f"superglue/{file}", 2, field, whitespace=True)
  where[key_path[-1]] = ""
  write_lines(tmp_path / "superglue" / file, [json.dumps(record), json.dumps(bad)])
  assert_empty_text(lambda: registry.load_split(task_name, tmp_path, "val"),
                    f"superglue/{file}", 2, field)
  # The valid record alone still loads.
  write_lines(tmp_path / "superglue" / file, [json.dumps(record)])
  assert registry.load_split(task_name, tmp_path, "val")


@pytest.mark.parametrize("row,field", [
    (tsv("go", "V", "0-1", "", "I go ."), "sentence1"),
    (tsv("go", "V", "0-1", "Go now .", "  "), "sentence2"),
    (tsv(" ", "V", "0-1", "Go now .", "I go ."), "word"),
])
def test_wic_original_empty_text(tmp_path, row, field):
  data = write_lines(tmp_path / "train.data.txt", [tsv("go", "V", "0-1", "Go now .", "I go ."),
                                                   row])
  write_lines(tmp_path / "train.gold.txt", ["T", "F"])
  assert_empty_text(lambda: list(readers.read_wic_original(str(data), "train")),
                    "train.data.txt", 2, field, whitespace=field != "sentence1")


def test_wic_original_empty_target_token(tmp_path):
  # Two spaces in a row make an empty token; marking it would give "**".
  data = write_lines(tmp_path / "train.data.txt", [tsv("go", "V", "1-1", "Go  now .", "I go .")])
  write_lines(tmp_path / "train.gold.txt", ["T"])
  with pytest.raises(DataError, match=r"train.data.txt, line 1, field 'index1-index2': word index "
                     r"1 of sentence1 is an empty token"):
    list(readers.read_wic_original(str(data), "train"))


@pytest.mark.parametrize("token", ["", "  "])
def test_conll_empty_token(tmp_path, token):
  # " \tO" is not a separator line (it holds a tag): its token is whitespace only.
  write_lines(tmp_path / "wnut17/emerging.dev.conll",
              ["Paris\tB-location", "is\tO", "", "Hi\tO", f"{token}\tO", "there\tO"])
  assert_empty_text(lambda: registry.load_split("wnut17", tmp_path, "dev"),
                    "wnut17/emerging.dev.conll", 5, "token", whitespace=bool(token))


@pytest.mark.parametrize("change,field", [
    (lambda record: record["qas"][1].update(question=""), "qas[1].question"),
    (lambda record: record.update(context="  "), "context"),
    (lambda record: record["qas"][0].update(answers=["Paris", " "]), "qas[0].answers[1]"),
])
def test_mrqa_empty_text(tmp_path, change, field):
  path = tmp_path / "mrqa/dev/SQuAD.jsonl.gz"
  path.parent.mkdir(parents=True)
  record = {"id": "c1", "context": MRQA_CONTEXT, "qas": [
      mrqa_qa("q1", ["Paris"], [[23, 27]]), mrqa_qa("q2", ["1889"], [[46, 49]])]}
  bad = json.loads(json.dumps(record))
  change(bad)
  with gzip.open(path, "wt", encoding="utf-8") as f:
    for r in ({"header": {"dataset": "SQuAD", "split": "dev"}}, record, bad):
      f.write(json.dumps(r) + "\n")
  assert_empty_text(lambda: registry.load_split("mrqa/squad", tmp_path, "dev"),
                    "mrqa/dev/SQuAD.jsonl.gz", 3, field, whitespace=field != "qas[1].question")


@pytest.mark.parametrize("change,field", [
    (lambda p: p["qas"][0].update(question=" "), "data[0].paragraphs[0].qas[0].question"),
    (lambda p: p.update(context=""), "data[0].paragraphs[0].context"),
    (lambda p: p["qas"][0]["answers"][1].update(text=""),
     "data[0].paragraphs[0].qas[0].answers[1].text"),
])
def test_squad_empty_text(tmp_path, change, field):
  document = squad_document()
  change(document["data"][0]["paragraphs"][0])
  (tmp_path / "squad").mkdir()
  (tmp_path / "squad/dev-v1.1.json").write_text(json.dumps(document))
  assert_empty_text(lambda: registry.load_split("squad_v1", tmp_path, "dev"),
                    "squad/dev-v1.1.json", None, field, whitespace=field.endswith("question"))


def test_spec_file_tsv_and_jsonl_empty_text(tmp_path):
  task = spec_task(tmp_path, name="mine", type="classification", text_fields=["review"],
                   label_field="stars", labels=["neg", "pos"], id_field="id",
                   files=write_splits(tmp_path / "mine", "tsv", [
                       tsv("id", "review", "stars"), tsv("r1", "great", "pos"),
                       tsv("r2", " ", "neg")]))
  assert_empty_text(lambda: registry.load_split(task, tmp_path, "train"), "mine/train.tsv", 3,
                    "review", whitespace=True)
  task = spec_task(tmp_path, name="cls", type="classification", text_fields=["a", "b"],
                   label_field="y", labels=["neg", "pos"],
                   files=write_splits(tmp_path / "cls", "jsonl", [
                       json.dumps({"a": "x", "b": "y", "y": "pos"}),
                       json.dumps({"a": "x", "b": "", "y": "neg"})]))
  assert_empty_text(lambda: registry.load_split(task, tmp_path, "dev"), "cls/dev.jsonl", 2, "b")
  task = spec_task(tmp_path, name="sim", type="regression", text_fields=["a", "b"],
                   label_field="score", files=write_splits(tmp_path / "sim", "jsonl", [
                       json.dumps({"a": "", "b": "y", "score": 3})]))
  assert_empty_text(lambda: registry.load_split(task, tmp_path, "dev"), "sim/dev.jsonl", 1, "a")


# ------------------------------------------------------------------------------------------------
# One reader path for training and prediction; inputs that were accepted silently or crashed


COLA_ROWS = [tsv("gj04", "1", "", "The sailors rode the breeze clear of the rocks."),
             tsv("gj04", "0", "*", "The weights made the rope stretch pulley."),
             tsv("cj99", "1", "", "The doll wriggled itself loose.")]


def test_predict_reads_a_headerless_cola_file_as_training_does(tmp_path):
  from camtl_jax import predict
  task = registry.get_task("glue/cola")
  path = write_lines(tmp_path / "glue" / "CoLA" / "dev.tsv", COLA_ROWS)
  trained_on = registry.load_split(task, tmp_path, "dev")
  assert [ex.texts for ex in trained_on][0] == ("The sailors rode the breeze clear of the rocks.",)
  for fmt in ("task", None):  # --format task, and detected from the .tsv that is not generic
    assert predict.read_inputs(task, path, fmt) == trained_on
  elsewhere = write_lines(tmp_path / "mine" / "dev.tsv", COLA_ROWS)  # by the file's name
  assert [ex.texts for ex in predict.read_inputs(task, elsewhere, "task")] == [
      ex.texts for ex in trained_on]
  damaged = write_lines(tmp_path / "bad" / "glue" / "CoLA" / "dev.tsv",
                        COLA_ROWS[:2] + [tsv("cj99", "x", "", "A sentence.")])
  with pytest.raises(DataError) as trained_error:
    registry.load_split(task, tmp_path / "bad", "dev")
  with pytest.raises(DataError) as predict_error:
    predict.read_inputs(task, damaged, "task")
  assert str(predict_error.value) == str(trained_error.value)
  assert str(trained_error.value).startswith(f"{damaged}, line 3, field 'label': unknown label")
  # A train/dev file under another name is read in the test file's layout: the error says so.
  renamed = write_lines(tmp_path / "mine" / "my_cola.tsv", COLA_ROWS)
  with pytest.raises(DataError, match=r"my_cola.tsv, line 1, field 'sentence'.*read in "
                     r"glue/cola's test-file layout; a file named dev.tsv or train.tsv is read"):
    predict.read_inputs(task, renamed, "task")


@pytest.mark.integration  # reads ../shared/data
def test_predict_reads_the_real_cola_dev_file_as_training_does(shared_data):
  from camtl_jax import predict
  task = registry.get_task("glue/cola")
  examples = predict.read_inputs(task, shared_data / "glue" / "CoLA" / "dev.tsv", "task")
  assert len(examples) == 1043 and examples == registry.load_split(task, shared_data, "dev")


def test_a_tsv_field_longer_than_the_csv_limit_is_read_in_training_and_prediction(tmp_path):
  import csv

  from camtl_jax import predict
  long_text = "word " * 40_000  # 200,000 characters: over csv's default limit of 131,072
  path = write_lines(tmp_path / "glue" / "SST-2" / "train.tsv",
                     [tsv("sentence", "label"), tsv("short", "0"), tsv(long_text, "1")])
  examples = registry.load_split("glue/sst2", tmp_path, "train")
  assert examples[1].texts == (long_text,)
  generic = write_lines(tmp_path / "inputs.tsv", [tsv("text"), tsv(long_text)])
  assert predict.read_inputs(registry.get_task("glue/sst2"), generic)[0].texts == (long_text,)
  assert predict.read_inputs(registry.get_task("glue/sst2"), path, "task")[1].texts == (
      long_text,)
  # Quoted csv (task spec files) goes through the csv module: its limit is raised too.
  assert next(csv.reader([f'"{long_text}",1']))[0] == long_text


def test_a_nul_byte_in_a_text_is_refused_naming_file_line_and_field(tmp_path):
  path = write_lines(tmp_path / "glue" / "SST-2" / "train.tsv",
                     [tsv("sentence", "label"), tsv("fine", "0"), tsv("bro\0ken", "1")])
  with pytest.raises(DataError, match=rf"^{path}, line 3, field 'sentence': NUL byte at "
                     "character 3"):
    registry.load_split("glue/sst2", tmp_path, "train")
  jsonl = write_lines(tmp_path / "superglue" / "BoolQ" / "train.jsonl", [json.dumps(
      {"question": "q\u0000?", "passage": "p", "idx": 0, "label": True})])
  with pytest.raises(DataError, match=rf"^{jsonl}, line 1, field 'question': NUL byte"):
    registry.load_split("superglue/boolq", tmp_path, "train")


def _wsc_line(span1_index, span1_text, label=True):
  record = {"text": "Mark told Pete's friend many lies about himself. He should have known.",
            "target": {"span1_index": span1_index, "span1_text": span1_text,
                       "span2_index": 8, "span2_text": "He"}, "idx": 0}
  return json.dumps(record if label is None else {**record, "label": label})


def test_wsc_span1_text_must_be_the_words_at_its_index(tmp_path, caplog):
  folder = tmp_path / "superglue" / "WSC"
  # Case, punctuation and a possessive 's do not count: "Pete" at "Pete's", "he" at "He".
  write_lines(folder / "train.jsonl", [_wsc_line(2, "pete"), _wsc_line(0, "Mark")])
  marked = registry.load_split("superglue/wsc", tmp_path, "train")
  assert marked[0].texts[0].startswith("Mark told *Pete's* friend")
  path = write_lines(folder / "val.jsonl", [_wsc_line(0, "Mark"), _wsc_line(2, "Mark")])
  with pytest.raises(DataError, match=rf"^{path}, line 2, field 'span1_text': 'Mark' is not "
                     r"the text at span1_index \(\"Pete's\"\)"):
    registry.load_split("superglue/wsc", tmp_path, "val")
  # The official test split holds three such rows and needs every row for its leaderboard file.
  write_lines(folder / "test.jsonl", [_wsc_line(2, "Mark", label=None)])
  with caplog.at_level(logging.WARNING):
    assert len(registry.load_split("superglue/wsc", tmp_path, "test")) == 1
  assert "line 1, field 'span1_text': 'Mark' is not the text at span1_index" in caplog.text
