"""Task spec files (camtl_jax/tasks/spec.py): every head type from files written here, the
errors, and a micro run on spec tasks that predict and export use after the spec is gone."""
import json
import shutil
from pathlib import Path

import pytest

from camtl_jax import experiment, predict
from camtl_jax.cli import adapt as cli_adapt
from camtl_jax.cli import common
from camtl_jax.cli import data as cli_data
from camtl_jax.cli import predict as cli_predict
from camtl_jax.tasks import base, registry, spec
from camtl_jax.tasks.base import DataError
from tests.conftest import micro_config

TICKETS_CSV = (
    'id,subject,body,label\n'
    't1,refund,"charged twice, ""please"" refund",billing\n'
    't2,crash,"the app crashes\nwhen I open it",bug\n'
    't3,login,cannot log in,account\n'
    't4,invoice,"wrong amount, again",billing\n')
CONLL = ("-DOCSTART- -X- O\n\n"
         "my O\nNova B-PRODUCT\nPhone I-PRODUCT\nbroke O\n\n"
         "I O\nlive O\nin O\nOslo B-LOC\n")


def write(folder: Path, name: str, text: str) -> Path:
  path = folder / name
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(text, encoding="utf-8")
  return path


def jsonl(rows) -> str:
  return "".join(json.dumps(r) + "\n" for r in rows)


def squad(rows) -> str:
  paragraphs = [{"context": c, "qas": [{"id": i, "question": q, "answers": [
      {"text": a, "answer_start": c.index(a)}]}]} for i, q, c, a in rows]
  return json.dumps({"data": [{"title": "t", "paragraphs": paragraphs}]})


QA = [("q1", "Where is it made?", "It is made in Oslo.", "Oslo"),
      ("q2", "Who answers?", "The support team answers.", "support")]


@pytest.fixture
def data(tmp_path) -> Path:
  """One data file set per head type and format."""
  d = tmp_path / "data"
  for split in ("train", "dev"):
    write(d, f"tickets_{split}.csv", TICKETS_CSV)
    write(d, f"ratings_{split}.tsv", "review\tscore\ngood phone\t4.5\nawful lamp\t1\n")
    write(d, f"choice_{split}.jsonl", jsonl([
        {"question": "What cuts paper?", "choices": ["a pen", "scissors", "a lamp"], "answer": 1},
        {"question": "What boils water?", "choices": ["a kettle", "a pen", "a watch"],
         "answer": 0}]))
    write(d, f"choice_{split}.csv", "q,a,b,right\nWhat cuts paper?,a pen,scissors,B\n"
          "What boils water?,a kettle,a pen,A\n")
    write(d, f"qa_{split}.json", squad(QA))
    write(d, f"qa_{split}.jsonl", jsonl([
        {"id": "q1", "question": QA[0][1], "context": QA[0][2],
         "answers": [{"text": "Oslo", "answer_start": 14}]},
        {"id": "q2", "question": QA[1][1], "context": QA[1][2],
         "answers": {"text": ["support"], "answer_start": [4]}}]))
    write(d, f"ner_{split}.conll", CONLL)
    write(d, f"ner_{split}.jsonl", jsonl([{"words": ["Nova", "Phone"],
                                           "tags": ["B-PRODUCT", "I-PRODUCT"]}]))
  return d


SPEC = """
tasks:
  - name: t/tickets
    type: classification
    files: {train: data/tickets_train.csv, dev: data/tickets_dev.csv}
    text_fields: [subject, body]
    id_field: id
  - name: t/ratings
    type: regression
    files: {train: data/ratings_train.tsv, dev: data/ratings_dev.tsv}
    text_fields: [review]
    label_field: score
  - name: t/choice
    type: multiple_choice
    files: {train: data/choice_train.jsonl, dev: data/choice_dev.jsonl}
    question_field: question
    choices_field: choices
    label_field: answer
  - name: t/choice_columns
    type: multiple_choice
    files: {train: data/choice_train.csv, dev: data/choice_dev.csv}
    question_field: q
    choice_fields: [a, b]
    choice_labels: [A, B]
    label_field: right
  - name: t/qa
    type: span
    files: {train: data/qa_train.json, dev: data/qa_dev.json}
  - name: t/qa_lines
    type: span
    format: jsonl
    files: {train: data/qa_train.jsonl, dev: data/qa_dev.jsonl}
  - name: t/ner
    type: tagging
    files: {train: data/ner_train.conll, dev: data/ner_dev.conll}
  - name: t/ner_lines
    type: tagging
    files: {train: data/ner_train.jsonl, dev: data/ner_dev.jsonl}
    labels: [O, B-PRODUCT, I-PRODUCT]
"""


def test_every_head_type_from_written_files(tmp_path, data):
  tasks = {t.name: t for t in spec.load_spec(write(tmp_path, "spec.yaml", SPEC))}
  read = {name: registry.load_split(task, "", "dev") for name, task in tasks.items()}
  tickets = read["t/tickets"]
  # Quoted fields keep their commas, doubled quotes and line breaks; guids name the first line.
  assert tickets[0].texts == ("refund", 'charged twice, "please" refund')
  assert tickets[1].texts == ("crash", "the app crashes\nwhen I open it")
  assert [ex.guid.rsplit(":", 1)[1] for ex in tickets] == ["2", "3", "5", "6"]
  assert [ex.example_id for ex in tickets] == ["t1", "t2", "t3", "t4"]
  assert [ex.label for ex in read["t/ratings"]] == [4.5, 1.0]
  assert tasks["t/ratings"].type == base.REGRESSION and tasks["t/ratings"].labels == ()
  choice = read["t/choice"][0]
  assert choice.choices[1] == ("What cuts paper?", "scissors") and choice.label == 1
  assert tasks["t/choice"].num_choices == 3 and tasks["t/choice"].labels == ("0", "1", "2")
  assert [ex.label for ex in read["t/choice_columns"]] == [1, 0]
  assert tasks["t/choice_columns"].num_choices == 2
  for name in ("t/qa", "t/qa_lines"):
    assert [ex.answers for ex in read[name]] == [(("Oslo", 14),), (("support", 4),)]
    assert read[name][0].question == "Where is it made?"
  ner = read["t/ner"]
  assert len(ner) == 2 and ner[0].words == ("my", "Nova", "Phone", "broke")  # -DOCSTART- left out
  assert ner[1].tags == ("O", "O", "O", "B-LOC")
  assert read["t/ner_lines"][0].tags == ("B-PRODUCT", "I-PRODUCT")
  assert [t.metrics for t in tasks.values()][:3] == [("accuracy",), ("pearson", "spearman"),
                                                     ("accuracy",)]


def test_labels_inferred_sorted_and_recorded(tmp_path, data):
  from camtl_jax import workdir
  tasks = {t.name: t for t in spec.load_spec(write(tmp_path, "spec.yaml", SPEC))}
  tickets, ner = tasks["t/tickets"], tasks["t/ner"]
  assert tickets.labels == ("account", "billing", "bug")
  assert ner.labels == ("B-LOC", "B-PRODUCT", "I-PRODUCT", "O")
  assert tickets.spec["inferred_labels"] and not tasks["t/ner_lines"].spec["inferred_labels"]
  record = workdir.task_records([tickets], [(0.0, 1.0)])[0]
  assert record["labels"] == ["account", "billing", "bug"] and record["spec"]["labels"] == [
      "account", "billing", "bug"]
  # The recorded entry rebuilds the task, reader included.
  again = workdir.task_from_record(json.loads(json.dumps(record)))
  assert again.labels == tickets.labels and again.spec == tickets.spec
  assert len(list(again.reader(str(data / "tickets_dev.csv"), "test"))) == 4


def test_a_split_missing_and_files_beside_the_spec_or_in_data_dir(tmp_path, data):
  path = write(tmp_path / "specs", "spec.yaml", SPEC.split("  - name: t/ratings")[0])
  with pytest.raises(spec.SpecError) as e:
    spec.load_spec(path)
  assert str(path) in str(e.value) and "tasks[0] (t/tickets).files.train" in str(e.value)
  assert "split 'train' is missing" in str(e.value)
  # Not beside the spec: looked up in data_dir.
  assert spec.load_spec(path, data_dir=str(tmp_path))[0].splits["dev"] == str(
      data / "tickets_dev.csv")


SPEC_ERRORS = {
    "unknown type": ("type: classification", "type: clasification", "tasks[0] (t/x).type",
                     "did you mean 'classification'"),
    "unknown key": ("label_field: label", "label_feld: label", "tasks[0] (t/x).label_feld",
                    "did you mean 'label_field'"),
    "missing key": ("text_fields: [subject, body]", "", "tasks[0] (t/x).text_fields",
                    "missing (required)"),
    "bad metric": ("label_field: label", "label_field: label\n    metrics: [span_f1]",
                   "tasks[0] (t/x).metrics", "not a classification metric"),
    "binary f1 on three labels": ("label_field: label", "label_field: label\n    metrics: [f1]",
                                  "metrics", "use macro_f1"),
    "no dev split": ("dev: data/tickets_dev.csv", "test: data/tickets_dev.csv",
                     "tasks[0] (t/x).files.dev", "a task needs a dev split"),
    "bad format": ("type: classification", "type: classification\n    format: conll",
                   "tasks[0] (t/x).format", "not a classification format"),
    "yaml syntax": ("type: classification", "type: [classification", "line ", "invalid YAML"),
}
ONE_TASK = """
tasks:
  - name: t/x
    type: classification
    files: {train: data/tickets_train.csv, dev: data/tickets_dev.csv}
    text_fields: [subject, body]
    label_field: label
"""


@pytest.mark.parametrize("case", sorted(SPEC_ERRORS))
def test_a_spec_error_is_one_line_naming_the_file_and_the_key(tmp_path, data, case):
  old, new, key, message = SPEC_ERRORS[case]
  path = write(tmp_path, "spec.yaml", ONE_TASK.replace(old, new))
  with pytest.raises(spec.SpecError) as e:
    spec.load_spec(path)
  text = str(e.value)
  assert "\n" not in text and text.startswith(str(path)), text
  assert key in text and message in text, text


def test_task_names_twice_and_registry_names_are_refused(tmp_path, data):
  twice = write(tmp_path, "twice.yaml", ONE_TASK + ONE_TASK.split("tasks:")[1])
  with pytest.raises(spec.SpecError, match=r"tasks\[1\].name: task 't/x' is declared twice"):
    spec.load_spec(twice)
  first, second = write(tmp_path, "a.yaml", ONE_TASK), write(tmp_path, "b.json", json.dumps(
      {"tasks": [{"name": "t/x", "type": "regression", "text_fields": ["body"],
                  "files": {"train": "data/ratings_train.tsv", "dev": "data/ratings_dev.tsv"},
                  "label_field": "score"}]}))
  with pytest.raises(spec.SpecError, match="b.json: tasks.0..name: task 't/x' is also declared"):
    spec.load_specs([first, second])
  taken = write(tmp_path, "taken.yaml", ONE_TASK.replace("t/x", "glue/rte"))
  with pytest.raises(spec.SpecError, match="'glue/rte' is a registered task"):
    spec.load_spec(taken)
  with pytest.raises(ValueError, match="named twice"):
    spec.resolve_tasks(["t/x", "t/x"], [first])


def test_config_tasks_names_spec_tasks_beside_registry_tasks(tmp_path, data):
  path = write(tmp_path, "spec.yaml", SPEC)
  config = micro_config(tasks=("demo/sentiment", "t/ner", "t/choice"), task_specs=(str(path),))
  tasks = experiment.config_tasks(config)
  assert [t.name for t in tasks] == ["demo/sentiment", "t/ner", "t/choice"]
  assert tasks[0] is registry.get_task("demo/sentiment") and tasks[1].spec is not None
  config.tasks = ("t/nope",)
  with pytest.raises(ValueError, match="not in the spec files"):
    experiment.config_tasks(config)


BAD_DATA = {
    "label outside the declared set": (
        "tickets_dev.csv", TICKETS_CSV.replace("cannot log in,account", "cannot log in,acount"),
        "line 5, field 'label': unknown label 'acount'"),
    "quoted field across lines, then a bad row": (
        "tickets_dev.csv", TICKETS_CSV + "t5,only two\n", "line 7: expected 4 fields"),
    "unclosed quote": ("tickets_dev.csv", TICKETS_CSV + 't5,x,"never closed,billing\n',
                       "malformed csv"),
    "empty text": ("tickets_dev.csv", TICKETS_CSV + "t5, ,body,bug\n",
                   "line 7, field 'subject': empty text"),
    "wrong choice count": ("choice_dev.jsonl", jsonl([{"question": "q", "choices": ["a", "b"],
                                                       "answer": 0}]),
                           "line 1, field 'choices': 2 choices; every row of t/choice has 3"),
    "choice index out of range": ("choice_dev.jsonl", jsonl([{
        "question": "q", "choices": ["a", "b", "c"], "answer": 3}]),
        "line 1, field 'answer': label 3: expected the index of the right choice, 0 to 2"),
    "regression not a number": ("ratings_dev.tsv", "review\tscore\ngood\thigh\n",
                                "line 2, field 'score': not a number: 'high'"),
    "answer not at its offset": ("qa_dev.jsonl", jsonl([{
        "question": "q", "context": "It is in Oslo.", "answers": [
            {"text": "Oslo", "answer_start": 3}]}]), "line 1, field 'answers[0]': answer text"),
    "unknown tag": ("ner_dev.conll", "Nova B-PRODUCT\nrocks B-SONG\n",
                    "line 2, field 'tag': unknown label 'B-SONG'"),
}


@pytest.mark.parametrize("case", sorted(BAD_DATA))
def test_a_data_error_names_the_file_line_and_field(tmp_path, data, case):
  name, text, message = BAD_DATA[case]
  tasks = {t.name: t for t in spec.load_spec(write(tmp_path, "spec.yaml", SPEC))}
  write(data, name, text)
  task = next(t for t in tasks.values() if t.splits["dev"].endswith(name))
  with pytest.raises(DataError) as e:
    registry.load_split(task, "", "dev")
  assert str(e.value).startswith(str(data / name)) and message in str(e.value), str(e.value)


def test_camtl_data_check_and_stats(tmp_path, data, capsys):
  path = write(tmp_path, "spec.yaml", SPEC)
  assert cli_data.main(["check", str(path), "--tokenizer", "micro", "--max-length", "8"]) == 0
  out = capsys.readouterr().out
  assert "t/tickets (classification, labels (from the train split, sorted): account, billing, " \
         "bug; metrics: accuracy)" in out
  assert "labels: account 1 (25.0%), billing 2 (50.0%), bug 1 (25.0%)" in out
  assert "truncated at max length 8" in out and "need more than one window" in out
  assert "8 task(s): every file reads" in out
  assert cli_data.main(["stats", "t/ratings", "--task-specs", str(path), "--tokenizer",
                        "micro"]) == 0
  assert "train: 2 examples" in capsys.readouterr().out
  write(data, "ner_dev.conll", "Nova B-SONG\n")
  assert cli_data.main(["check", str(path), "--tokenizer", "micro"]) == 1
  captured = capsys.readouterr()
  assert "ner_dev.conll, line 1, field 'tag': unknown label 'B-SONG'" in captured.out + captured.err
  assert "bad data in t/ner" in captured.out
  write(tmp_path, "spec.yaml", SPEC.replace("type: span", "type: spam"))
  assert cli_data.main(["check", str(path)]) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and err[0].startswith("camtl-data: error: ") and ".type" in err[0]


def test_predict_reads_a_benchmark_or_spec_file_in_its_own_format(tmp_path, data):
  tickets = spec.load_spec(write(tmp_path, "spec.yaml", ONE_TASK))[0]
  # A csv (not jsonl / tsv): the task's own format without --format task.
  assert len(predict.read_inputs(tickets, data / "tickets_dev.csv")) == 4
  rte = registry.get_task("glue/rte")
  glue = write(tmp_path, "rte.tsv", "index\tsentence1\tsentence2\tlabel\n0\tA man.\tA person."
               "\tentailment\n")
  assert predict.read_inputs(rte, glue)[0].texts == ("A man.", "A person.")
  # Neither the generic fields nor the task's own: the error says --format task reads it.
  other = write(tmp_path, "other.tsv", "sentence\nA man.\n")
  with pytest.raises(DataError, match="field 'text'.*own format reads with --format task"):
    predict.read_inputs(rte, other)


def test_the_shipped_example_declares_every_head_type_and_its_files_read():
  examples = Path(__file__).resolve().parents[1] / "examples"
  tasks = spec.load_spec(examples / "my_tasks.yaml")
  assert sorted(t.type for t in tasks) == sorted(base.TASK_TYPES)
  for task in tasks:
    for split in ("train", "dev"):
      assert len(registry.load_split(task, examples, split)) >= 8, (task.name, split)


def test_one_data_dir_flag_and_the_old_spelling_hidden(capsys):
  for module, argv in ((cli_predict, ["--workdir", "w", "--submission", "o"]),
                       (cli_adapt, ["--workdir", "w", "--new-task", "t"])):
    parser = module.make_parser()
    assert parser.parse_args(argv + ["--data-dir", "d"]).data_dir == "d"
    assert parser.parse_args(argv + ["--data", "d"]).data_dir == "d"
    assert "--data-dir" in parser.format_help() and "--data " not in parser.format_help()
  assert cli_data.make_parser().parse_args(["check", "s.yaml", "--data-dir", "d"]).data_dir == "d"
  from camtl_jax import main  # camtl-train: --data-dir is --config.data_dir
  train_args = common.parse_args(main.make_parser(), ["--config", "micro", "--workdir", "w",
                                                      "--data-dir", "d"])
  assert main.load_config(train_args).data_dir == "d"


# ------------------------------------------------------------------------------------------------
# Training on spec tasks (micro config, in process)


TRAIN_SPEC = """
tasks:
  - name: my/tickets
    type: classification
    files: {train: tickets_train.csv, dev: tickets_dev.csv}
    text_fields: [subject, body]
  - name: my/ner
    type: tagging
    format: conll
    files: {train: ner_train.conll, dev: ner_dev.conll}
"""


def spec_folder(root: Path) -> Path:
  for split in ("train", "dev"):
    write(root, f"tickets_{split}.csv", TICKETS_CSV)
    write(root, f"ner_{split}.conll", CONLL)
  return write(root, "my_tasks.yaml", TRAIN_SPEC)


def test_nothing_is_written_into_the_workdir_when_a_file_is_bad(tmp_path):
  from camtl_jax import train
  path = spec_folder(tmp_path / "spec")
  write(path.parent, "ner_dev.conll", "Nova B-SONG\n")
  workdir = tmp_path / "run"
  config = micro_config(tasks=("my/tickets", "my/ner"), task_specs=(str(path),))
  with pytest.raises(DataError, match="ner_dev.conll, line 1, field 'tag': unknown label 'B-SONG'"):
    train.train_and_evaluate(config, str(workdir))
  assert not workdir.exists() or not [p for p in workdir.iterdir() if p.name != ".lock"]


def test_a_workdir_trained_on_spec_tasks_predicts_and_exports_without_the_spec(tmp_path):
  from camtl_jax import comparison, export, train, workdir
  from camtl_jax.cli import experiment as cli_experiment
  folder = tmp_path / "spec"
  path = spec_folder(folder)
  arm = comparison.ArmRun("mtl", 0, "micro")
  run = tmp_path / "arms" / arm.folder  # where camtl-experiment puts an arm's run
  config = micro_config(tasks=("demo/sentiment", "my/tickets", "my/ner"),
                        task_specs=(str(path),), total_steps=2, eval_every=2,
                        checkpoint_every=2)
  train.train_and_evaluate(config, str(run))
  records = json.loads((run / "tasks.json").read_text())
  assert records[1]["labels"] == ["account", "billing", "bug"]
  assert records[1]["spec"]["inferred_labels"] and records[2]["spec"]["format"] == "conll"
  # camtl-experiment's record of the run: scores and training rows of the spec tasks too.
  measures = comparison.Measures(train_rows=cli_experiment.measures(tmp_path, None, []).train_rows)
  (written,) = comparison.write_finished_records(tmp_path / "arms", [arm], [], measures)
  record = json.loads(written.read_text())
  assert set(record["task_scores"]) == {"demo/sentiment", "my/tickets", "my/ner"}
  assert record["score_names"]["my/ner"] == "entity_f1"
  assert record["train_rows"]["my/tickets"] == 4 and record["train_rows"]["demo/sentiment"] > 6
  shutil.rmtree(folder)  # neither the spec file nor the data is needed any more
  trained = workdir.load(run)
  assert [t.name for t in trained.tasks] == ["demo/sentiment", "my/tickets", "my/ner"]
  tickets = predict.predict(trained, "my/tickets", [predict.text_example(
      trained.tasks[1], "crash", "the app crashes")])
  assert tickets[0]["label"] in ("account", "billing", "bug")
  # The recorded reader reads a new file in the task's own format (CoNLL, test: tokens only).
  new = write(tmp_path, "new.conll", "my\nNova\nPhone\n\nin\nOslo\n")
  examples = predict.read_inputs(trained.tasks[2], new)
  tags = predict.predict(trained, "my/ner", examples)
  assert [len(r["tags"]) for r in tags] == [3, 2]
  result = export.export_task(trained, "my/tickets", tmp_path / "artifact")
  meta = json.loads((Path(result.out_dir) / "meta.json").read_text())
  assert meta["labels"] == ["account", "billing", "bug"], meta


def test_camtl_adapt_adds_a_spec_task(micro_workdir, tmp_path):
  from camtl_jax import workdir
  path = spec_folder(tmp_path / "spec")
  out = tmp_path / "adapted"
  assert cli_adapt.main(["--workdir", str(micro_workdir), "--new-task", "my/tickets",
                         "--task-specs", str(path), "--steps", "2", "--out", str(out)]) == 0
  shutil.rmtree(path.parent)
  trained = workdir.load(out)
  assert trained.tasks[-1].name == "my/tickets" and trained.tasks[-1].spec["inferred_labels"]
  assert trained.tasks[-1].labels == ("account", "billing", "bug")
  # A registry task still needs --data-dir.
  assert cli_adapt.main(["--workdir", str(micro_workdir), "--new-task", "superglue/cb",
                         "--out", str(tmp_path / "cb")]) == 2
