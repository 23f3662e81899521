"""Five real GLUE tasks (RTE, MRPC, STS-B, SST-2, CoLA) on MiniLM at 128 tokens: the config for
your own data on a CPU, and the arms of the paper's comparison.

  python -m camtl_jax.main --config glue5_minilm --workdir /tmp/glue5 \
      --config.data_dir=/path/to/data          # glue/<Task>/{train,dev}.tsv as GLUE ships them
  python -m camtl_jax.main --config glue5_minilm:mtl --workdir /tmp/glue5_mtl
  python -m camtl_jax.main --config glue5_minilm:single_task:glue/rte --workdir /tmp/rte

Arms (ARG): camtl_mtu (default: full CA-MTL + MT-Uncertainty sampling with our options: calibrated
u, a 25% floor, a 50% cap), camtl_mtu_paper (the same with the paper's selection exactly:
normalised u, no floor, no cap), mtl (configs ablation:mtl semantics: shared encoder + heads, lower
half frozen, proportional sampling), the ablation steps attention / adapter / layernorm (layernorm
is full CA-MTL with proportional sampling), and single_task:TASK (one task, no conditioning,
everything trainable). The data folder: --config.data_dir, else $CAMTL_DATA_DIR, else ./data.
lr 1e-4, warmup 0.1 and 2000 steps are the best of a small sweep on the mtl arm
(docs/results/glue5_sweep.md: lr 3e-5 / 1e-4 / 3e-4, warmup 0 / 0.1, dev at 1000 and 2000 steps);
CoLA needs about one epoch of its own examples before it leaves the majority class, more than
2000 multi-task steps give it.
"""
import os
from typing import Callable

from camtl_jax.configs import ablation, common

GLUE5 = ("glue/rte", "glue/mrpc", "glue/stsb", "glue/sst2", "glue/cola")
ARMS = ("camtl_mtu", "camtl_mtu_paper", "mtl", "attention", "adapter", "layernorm",
        "single_task")
# The ablation step of each multi-task arm (configs/ablation.py).
ABLATION_STEP = {"camtl_mtu": "mtu", "camtl_mtu_paper": "mtu", "mtl": "mtl",
                 "attention": "attention", "adapter": "adapter", "layernorm": "layernorm"}
# The paper's MT-U selection exactly (configs/common.py names these three fields).
PAPER_MTU = {"mtu_uncertainty": "normalised", "mtu_min_share": 0.0, "mtu_max_share": 1.0}
# Arms matched to camtl_mtu's compute: arm -> the config whose steps are scaled (layernorm is full
# CA-MTL with proportional sampling).
MATCHED = {"mtl_matched": "glue5_minilm:mtl", "camtl_matched": "glue5_minilm:layernorm"}


def default_data_dir() -> str:
  """$CAMTL_DATA_DIR, else ./data (give --config.data_dir or camtl-experiment --data-dir)."""
  return os.environ.get("CAMTL_DATA_DIR") or "data"


def get_config(arg="camtl_mtu"):
  arm, _, task = (arg or "camtl_mtu").partition(":")
  if arm not in ARMS:
    raise ValueError(f"glue5_minilm arm {arm!r} unknown; choose one of {ARMS} "
                     "(single_task:TASK for one task)")
  c = common.base()
  if arm == "single_task":
    if task not in GLUE5:
      raise ValueError(f"glue5_minilm:single_task needs one of {GLUE5}, got {task!r}")
    c.tasks = (task,)
    c.model.conditioning = "none"
    c.sampler = "uniform"
    c.frozen_layers = (0, 0)
    c.freeze_embeddings = False
  else:
    step = ablation.get_config(ABLATION_STEP[arm])
    c.model = step.model
    c.sampler = step.sampler
    c.tasks = GLUE5
    if arm == "camtl_mtu_paper":
      c.update(PAPER_MTU)
  c.model_path = "minilm"
  c.data_dir = default_data_dir()
  c.max_length = 128
  c.batch_size = 16
  c.total_steps = 2000
  c.learning_rate = 1e-4
  c.warmup_fraction = 0.1
  c.log_every = 50
  c.eval_every = 500
  c.checkpoint_every = 250
  c.eval_batch_size = 128
  if arm == "single_task":  # the documented equal budget: 1/5 of the multi-task steps
    c.total_steps = c.total_steps // len(GLUE5)
  return c


def matched_steps(steps: int, flops: float, arm_flops: float) -> int:
  """Steps of an arm whose step costs arm_flops to spend what `steps` steps of flops spend."""
  return max(1, round(steps * flops / arm_flops))


def _flags(steps: int, evals: int = 2) -> tuple[str, ...]:
  """total_steps and dev evaluations at every steps / evals steps (the best of them is kept)."""
  return (f"--config.total_steps={steps}", f"--config.eval_every={max(1, steps // evals)}")


def experiment_arms(seeds=(0, 1), total_steps=None,
                    step_flops: Callable[[str], float] | None = None):
  """The runs of `camtl-experiment --experiment glue5_minilm`: (arm, seed, config, overrides).

  Per seed: camtl_mtu_paper, hf_single_task (first seed only: one model per task, HF
  transformers' recipe camtl_jax/perf/hf_finetune.RECIPE, about 8x the rows of a 2000-step
  run), mtl_matched and camtl_matched, then camtl_mtu, mtl and single_task; after all seeds the
  ablation steps (first seed), then hf_single_task's other seeds. Multi-task arms evaluate dev at
  half and all their steps (the
  better is kept), single-task arms at their end. Single-task budget: each task trains
  total_steps / 5 steps of b examples, the examples a task gets on average in a multi-task run.
  Matched arms: step_flops(config) is XLA's FLOPs of one compiled train step of that config
  (camtl-experiment measures it); they get matched_steps(total_steps, camtl_mtu's, theirs) steps,
  the compute of camtl_mtu's run. Without step_flops the matched arms are left out.
  """
  steps = total_steps or get_config().total_steps
  multi = _flags(steps)
  single_steps = max(1, steps // len(GLUE5))
  single = _flags(single_steps, evals=1)
  matched = {}
  if step_flops is not None:
    mtu = step_flops("glue5_minilm:camtl_mtu")
    matched = {arm: (config, _flags(matched_steps(steps, mtu, step_flops(config))))
               for arm, config in MATCHED.items()}
  hf = lambda seed: [("hf_single_task", seed, f"hf:glue5_minilm:single_task:{t}", ())  # noqa
                     for t in GLUE5]
  runs = []
  for seed in seeds:
    runs += [("camtl_mtu_paper", seed, "glue5_minilm:camtl_mtu_paper", multi)]
    runs += hf(seed) if seed == seeds[0] else []
    runs += [(arm, seed, config, flags) for arm, (config, flags) in matched.items()]
    runs += [("camtl_mtu", seed, "glue5_minilm:camtl_mtu", multi),
             ("mtl", seed, "glue5_minilm:mtl", multi)]
    runs += [("single_task", seed, f"glue5_minilm:single_task:{t}", single) for t in GLUE5]
  runs += [(arm, seeds[0], f"glue5_minilm:{arm}", multi)
           for arm in ("attention", "adapter", "layernorm")]
  return runs + [run for seed in seeds[1:] for run in hf(seed)]
