"""The commands' one-line errors (issue 34): a non-finite learning rate, a wrong --data-dir of
`camtl-data stats`, an unknown task, and the one rule for output folders (camtl-export and
camtl-convert refuse an existing, non-empty folder unless --overwrite). In process."""
import pytest

from camtl_jax.cli import common
from camtl_jax.tasks import registry


def _errors(capsys) -> list[str]:
  return [line for line in capsys.readouterr().err.splitlines() if "error" in line]


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_a_non_finite_learning_rate_must_be_a_finite_positive_number(value, tmp_path, capsys):
  from camtl_jax import main
  status = main.main(["--config", "micro", "--workdir", str(tmp_path / "run"),
                      f"--config.learning_rate={value}"])
  assert status == 2
  assert _errors(capsys) == [f"camtl-train: error: config.learning_rate={float(value)} must be a "
                             "finite number > 0"]
  assert not (tmp_path / "run").exists()


def test_the_unknown_task_error_names_close_matches_and_camtl_data_list():
  with pytest.raises(ValueError) as e:
    registry.get_task("glue/mrcp")
  message = str(e.value)
  assert message.startswith("unknown task 'glue/mrcp'; did you mean ['glue/mrpc'")
  assert "`camtl-data list` shows all" in message and len(message) < 200


def test_camtl_data_stats_with_a_wrong_data_dir_is_an_error(tmp_path, capsys):
  from camtl_jax.cli import data
  assert data.main(["stats", "glue/mrpc", "--data-dir", str(tmp_path / "nope")]) == 2
  assert _errors(capsys) == [f"camtl-data: error: --data-dir {tmp_path / 'nope'} is not a folder"]
  assert data.main(["stats", "glue/mrpc", "--data-dir", str(tmp_path)]) == 2
  [line] = _errors(capsys)
  assert line.startswith(f"camtl-data: error: no file of glue/mrpc in {tmp_path} (expected "
                         "glue/MRPC/train.tsv, glue/MRPC/dev.tsv, glue/MRPC/test.tsv)")
  assert data.main(["stats", "glue/mrcp", "--data-dir", str(tmp_path)]) == 2
  [line] = _errors(capsys)
  assert line.startswith("camtl-data: error: unknown task 'glue/mrcp'; did you mean ['glue/mrpc'")


def test_camtl_data_stats_bad_data_is_an_error_line_with_the_prefix(tmp_path, capsys):
  from camtl_jax.cli import data
  folder = tmp_path / "glue" / "SST-2"
  folder.mkdir(parents=True)
  (folder / "train.tsv").write_text("sentence\tlabel\ngood\t1\nbad\t7\n")
  assert data.main(["stats", "glue/sst2", "--data-dir", str(tmp_path), "--tokenizer",
                    "micro"]) == 1
  assert _errors(capsys) == [f"camtl-data: error: train: {folder / 'train.tsv'}, line 3, field "
                             "'label': unknown label '7'; allowed labels: ['0', '1']"]


def test_export_and_convert_refuse_a_non_empty_folder_unless_overwrite(tmp_path, capsys):
  from camtl_jax.cli import convert, export
  out = tmp_path / "out"
  out.mkdir()
  (out / "mine.txt").write_text("keep me")
  # Refused before the workdir (here: none) or the source is even looked at.
  assert export.main(["--workdir", str(tmp_path / "none"), "--task", "demo/sentiment",
                      str(out)]) == 2
  assert convert.main([str(tmp_path / "none"), str(out)]) == 2
  expected = (f"error: {out} exists and is not empty; pass --overwrite to replace its files, or "
              "choose another folder")
  assert _errors(capsys) == [f"camtl-export: {expected}", f"camtl-convert: {expected}"]
  assert (out / "mine.txt").read_text() == "keep me"
  common.check_output_dir(out, overwrite=True)  # allowed
  common.check_output_dir(tmp_path / "new", overwrite=False)
  (tmp_path / "empty").mkdir()
  common.check_output_dir(tmp_path / "empty", overwrite=False)
