"""Every config builds, and its model config is valid for the encoder shape it names."""
import importlib

import pytest

from camtl_jax.models import bert, camtl
from camtl_jax.tasks import registry

CONFIGS = {
    "demo": None, "tiny": None, "glue_base": None, "glue_large": None, "mtl24_large": None,
    "single_task": "glue/rte", "mtl_baseline": None, "ablation": "mtu",
}


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_config_builds_and_names_known_tasks(name):
  config = importlib.import_module(f"configs.{name}").get_config(CONFIGS[name])
  from camtl_jax.tasks import demo
  demo.register_demo_tasks()
  for task in config.tasks:
    registry.get_task(task)
  model = camtl.CAMTLConfig.from_config(config.model).replace(max_length=config.max_length)
  model.validate(bert.EncoderConfig(max_position_embeddings=512))


def test_ablation_steps_add_one_component_each():
  from configs import ablation
  steps = [ablation.get_config(s) for s in ablation.STEPS]
  assert [s.model.conditioning for s in steps] == ["none", "camtl", "camtl", "camtl", "camtl"]
  assert [s.model.cond_attention for s in steps] == [False, True, True, True, True]
  assert [s.model.adapter for s in steps] == ["none", "none", "top", "top", "top"]
  assert [s.model.cond_layernorm for s in steps] == [False, False, False, True, True]
  assert [s.sampler for s in steps] == ["proportional"] * 4 + ["mt_uncertainty"]
  with pytest.raises(ValueError, match="unknown"):
    ablation.get_config("everything")


def test_camtl_params_reports_a_config_without_weights(capsys):
  assert camtl.params_main(["--config", "configs/glue_base.py"]) == 0
  out = capsys.readouterr().out
  assert "8 tasks" in out and "109,482,240" in out  # BERT-base encoder, from the named shape
  assert "frozen" in out and "1.175x" in out
