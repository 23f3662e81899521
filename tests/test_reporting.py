"""reporting.py and the workdir's small files: the history survives a torn last line, results /
config / tasks files are replaced atomically, the progress bar keeps log lines off its line and
ends at the last step, the sampling plot says which points it clamped."""
import json
import logging
import os
from pathlib import Path

import jax.numpy as jnp
import ml_collections
import pytest

from camtl_jax import atomic, reporting, workdir
from camtl_jax.tasks import registry


def _record(step, u=0.5):
  return {"step": step, "loss": 1.0, "task_share": {"a": 0.5, "b": 0.5},
          "task_uncertainty": {"a": u, "b": 0.9}}


def _history(path, records, tail=""):
  path.write_text("".join(json.dumps(r) + "\n" for r in records) + tail)
  return path


# ------------------------------------------------------------------------------------------------
# history.jsonl


def test_a_torn_last_history_line_is_dropped_with_a_warning_naming_the_file(tmp_path, caplog):
  history = _history(tmp_path / "history.jsonl", [_record(2), _record(4)], '{"step": 6, "lo')
  with caplog.at_level(logging.WARNING, logger=reporting.__name__):
    reporting.truncate_history(history, 4)
  assert [json.loads(line)["step"] for line in history.read_text().splitlines()] == [2, 4]
  [warning] = [r.getMessage() for r in caplog.records]
  assert f"{history}, line 3: dropping a half-written last record" in warning
  assert [r["step"] for r in reporting.train_records(history)] == [2, 4]


def test_a_bad_history_line_before_the_last_names_the_file_and_line(tmp_path):
  history = _history(tmp_path / "history.jsonl", [_record(2)], '{"step": 4,\n' +
                     json.dumps(_record(6)) + "\n")
  with pytest.raises(ValueError, match=rf"{history}, line 2: not a JSON record"):
    reporting.truncate_history(history, 6)


# ------------------------------------------------------------------------------------------------
# Atomic writes


def _writers(path):
  """Each file a run rewrites in place, written through its own function."""
  task = registry.get_task("demo/sentiment")
  summary = {"step": 2, "score": 0.5, "results": {"demo/sentiment": {"accuracy": 0.5}},
             "aggregates": {}, "data_used": {"demo/sentiment": 0.1}}
  return {
      "results.json": lambda: reporting.write_results(path, summary),
      "results.txt": lambda: reporting.write_results(path, summary),  # after results.json
      "config.json": lambda: workdir.write_config(path, ml_collections.ConfigDict({"a": 1})),
      "tasks.json": lambda: workdir.write_task_records(path, [task], [(0.0, 1.0)]),
      "history.jsonl": lambda: reporting.truncate_history(path / "history.jsonl", 2),
  }


@pytest.mark.parametrize("name", ["results.json", "results.txt", "config.json", "tasks.json",
                                  "history.jsonl"])
def test_a_write_that_fails_leaves_the_old_file_whole_and_no_temporary_file(
    name, tmp_path, monkeypatch):
  old = json.dumps(_record(2)) + "\n" + json.dumps(_record(4)) + "\n"
  for file in ("results.json", "results.txt", "config.json", "tasks.json", "history.jsonl"):
    (tmp_path / file).write_text(old)

  replace = os.replace

  def full_disk(src, dst):
    if Path(dst).name != name:
      return replace(src, dst)
    raise OSError(28, "No space left on device")
  monkeypatch.setattr(os, "replace", full_disk)  # the moment a crash or a full disk hits
  with pytest.raises(OSError, match="No space left"):
    _writers(tmp_path)[name]()
  assert (tmp_path / name).read_text() == old
  assert sorted(p.name for p in tmp_path.iterdir()) == [
      "config.json", "history.jsonl", "results.json", "results.txt", "tasks.json"]


def test_atomic_write_replaces_the_file_with_the_usual_mode(tmp_path):
  path = tmp_path / "x.json"
  path.write_text("old")
  atomic.write_text(path, "new")
  plain = tmp_path / "plain"
  plain.write_text("")
  assert path.read_text() == "new" and path.stat().st_mode == plain.stat().st_mode
  assert sorted(p.name for p in tmp_path.iterdir()) == ["plain", "x.json"]


# ------------------------------------------------------------------------------------------------
# The progress bar


def test_the_bar_reaches_the_last_step_and_log_lines_stay_off_its_line(tmp_path, capsys):
  from camtl_jax.cli import common
  common.setup_logging()
  reporter = reporting.Reporter(tmp_path, ["a", "b"], 300, 0, 8)
  try:
    logging.getLogger("camtl_jax.train").info("compiling the train step ...")
    for step in range(1, 301):
      reporter.advance(step, {"steps": jnp.ones(())})
  finally:
    reporter.close()
  assert reporter.bar.n == 300
  err = capsys.readouterr().err
  before = err.split("compiling the train step ...")[0]
  assert before.endswith(("\r", "\n")), repr(before[-80:])  # the bar was cleared first
  assert "300/300" in err


# ------------------------------------------------------------------------------------------------
# sampling.png


def test_the_sampling_plot_says_which_points_it_clamped(tmp_path, monkeypatch):
  from matplotlib.figure import Figure
  history = _history(tmp_path / "history.jsonl",
                     [_record(2, u=0.5), _record(4, u=1.0), _record(6, u=1.0 - 1e-9)])
  seen = {}
  save = Figure.savefig

  def spy(fig, *args, **kwargs):
    seen["titles"] = [ax.get_title() for ax in fig.axes]
    seen["ylabels"] = [ax.get_ylabel() for ax in fig.axes]
    return save(fig, *args, **kwargs)
  monkeypatch.setattr(Figure, "savefig", spy)
  assert reporting.plot_sampling(history, tmp_path / "sampling.png") == {"a": 2, "b": 0}
  assert (tmp_path / "sampling.png").stat().st_size > 0
  assert "mean certainty 1 - u" in seen["titles"][1] and "u: mean uncertainty" in seen["titles"][1]
  assert "below 1e-06" in seen["titles"][1] and "drawn at 1e-06" in seen["titles"][1]
  assert seen["ylabels"][1] == "1 - u (log scale)"
