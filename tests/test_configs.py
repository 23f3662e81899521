"""Every config builds, and its model config is valid for the encoder shape it names."""
import importlib

import pytest

from camtl_jax.cli import common
from camtl_jax.cli import params as cli_params
from camtl_jax.models import bert, camtl
from camtl_jax.tasks import registry

CONFIGS = {
    "demo": None, "micro": None, "tiny": None, "glue_base": None, "glue_large": None,
    "mtl24_large": None, "single_task": "glue/rte", "mtl_baseline": None, "ablation": "mtu",
    "glue5_minilm": "single_task:glue/cola",
}


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_config_builds_and_names_known_tasks(name):
  config = importlib.import_module(f"camtl_jax.configs.{name}").get_config(CONFIGS[name])
  for task in config.tasks:
    registry.get_task(task)
  model = camtl.CAMTLConfig.from_config(config.model).replace(max_length=config.max_length)
  model.validate(bert.EncoderConfig(max_position_embeddings=512))


def test_every_shipped_config_is_tested_and_loads_by_name_from_any_folder(tmp_path, monkeypatch):
  assert sorted(set(common.shipped_configs()) - {"bench"}) == sorted(CONFIGS)
  monkeypatch.chdir(tmp_path)
  assert common.load_config("single_task:glue/cola").tasks == ("glue/cola",)
  path = common.config_dir() / "tiny.py"
  assert common.load_config(str(path), ["batch_size=4"]).batch_size == 4


def test_config_overrides_are_typed_and_typos_are_named():
  config = common.load_config("tiny", ["tasks=glue/rte,glue/mrpc", "learning_rate=1",
                                       "model.cond_attention_layers=(0, 1)",
                                       "async_checkpoint=false"])
  assert config.tasks == ("glue/rte", "glue/mrpc") and config.learning_rate == 1.0
  assert config.model.cond_attention_layers == (0, 1) and config.async_checkpoint is False
  with pytest.raises(common.UserError, match=r"unknown config field config\.batchsize "
                                             r"\(did you mean config\.batch_size\?\)"):
    common.load_config("tiny", ["batchsize=3"])
  with pytest.raises(common.UserError, match="is not a int"):
    common.load_config("tiny", ["batch_size=eight"])
  with pytest.raises(common.UserError, match=r"unknown config 'demoo': did you mean 'demo'"):
    common.load_config("demoo")
  with pytest.raises(common.UserError, match="config file /nonexistent/c.py not found"):
    common.load_config("/nonexistent/c.py")


def test_ablation_steps_add_one_component_each():
  from camtl_jax.configs import ablation
  steps = [ablation.get_config(s) for s in ablation.STEPS]
  assert [s.model.conditioning for s in steps] == ["none", "camtl", "camtl", "camtl", "camtl"]
  assert [s.model.cond_attention for s in steps] == [False, True, True, True, True]
  assert [s.model.adapter for s in steps] == ["none", "none", "top", "top", "top"]
  assert [s.model.cond_layernorm for s in steps] == [False, False, False, True, True]
  assert [s.sampler for s in steps] == ["proportional"] * 4 + ["mt_uncertainty"]
  with pytest.raises(ValueError, match="unknown"):
    ablation.get_config("everything")


def test_camtl_params_reports_a_config_without_weights(capsys):
  assert cli_params.main(["--config", "glue_base"]) == 0
  out = capsys.readouterr().out
  assert "8 tasks" in out and "109,482,240" in out  # BERT-base encoder, from the named shape
  assert "frozen" in out and "1.175x" in out


@pytest.mark.integration
def test_a_non_editable_install_ships_the_configs(tmp_path):
  """The top-level configs/ folder installs as camtl_jax.configs: from a wheel installed into a
  plain folder, `--config demo` resolves from any working directory."""
  import os
  import subprocess
  import sys
  repo = common.config_dir().parent
  built = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w",
                          str(tmp_path / "wheel"), str(repo)], capture_output=True, text=True,
                         timeout=600)
  assert built.returncode == 0, built.stderr[-3000:]
  wheel, = (tmp_path / "wheel").glob("camtl_jax-*.whl")
  installed = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps",
                              "--target", str(tmp_path / "site"), str(wheel)],
                             capture_output=True, text=True, timeout=600)
  assert installed.returncode == 0, installed.stderr[-3000:]
  code = ("from camtl_jax.cli import common; "
          "print(common.config_dir()); print(common.load_config('demo').tasks[0])")
  proc = subprocess.run([sys.executable, "-I", "-c", f"import sys; sys.path.insert(0, "
                         f"{str(tmp_path / 'site')!r}); {code}"], cwd=tmp_path,
                        capture_output=True, text=True, timeout=120,
                        env={"PATH": os.environ.get("PATH", "")})
  assert proc.returncode == 0, proc.stderr[-3000:]
  folder, first_task = proc.stdout.split()
  assert folder.startswith(str(tmp_path / "site")) and first_task == "demo/sentiment"
