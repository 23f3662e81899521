"""Five real GLUE tasks (RTE, MRPC, STS-B, SST-2, CoLA) on MiniLM at 128 tokens: the config for
your own data on a CPU, and the arms of the paper's comparison.

  python -m camtl_jax.main --config glue5_minilm --workdir /tmp/glue5 \
      --config.data_dir=/path/to/data          # glue/<Task>/{train,dev}.tsv as GLUE ships them
  python -m camtl_jax.main --config glue5_minilm:mtl --workdir /tmp/glue5_mtl
  python -m camtl_jax.main --config glue5_minilm:single_task:glue/rte --workdir /tmp/rte

Arms (ARG): camtl_mtu (default: full CA-MTL + MT-Uncertainty sampling), mtl (configs ablation:mtl
semantics: shared encoder + heads, lower half frozen, proportional sampling), the ablation steps
attention / adapter / layernorm, and single_task:TASK (one task, no conditioning, everything
trainable). data_dir defaults to the workspace's shared/data folder when it exists ($CAMTL_DATA_DIR
overrides). lr 1e-4, warmup 0.1 and 2000 steps are the best of a small sweep on the mtl arm
(docs/results/glue5_sweep.md: lr 3e-5 / 1e-4 / 3e-4, warmup 0 / 0.1, dev at 1000 and 2000 steps);
CoLA needs about one epoch of its own examples before it leaves the majority class, more than
2000 multi-task steps give it.
"""
import os
from pathlib import Path

from camtl_jax.configs import ablation, common

GLUE5 = ("glue/rte", "glue/mrpc", "glue/stsb", "glue/sst2", "glue/cola")
ARMS = ("camtl_mtu", "mtl", "attention", "adapter", "layernorm", "single_task")
# The ablation step of each multi-task arm (configs/ablation.py).
ABLATION_STEP = {"camtl_mtu": "mtu", "mtl": "mtl", "attention": "attention", "adapter": "adapter",
                 "layernorm": "layernorm"}


def default_data_dir() -> str:
  """$CAMTL_DATA_DIR, else shared/data beside the repository (a checkout's ../shared/data)."""
  if os.environ.get("CAMTL_DATA_DIR"):
    return os.environ["CAMTL_DATA_DIR"]
  beside_repo = Path(__file__).resolve().parents[3] / "shared" / "data"
  return str(beside_repo) if beside_repo.is_dir() else "../shared/data"


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


def experiment_arms(seeds=(0, 1), total_steps=None):
  """The runs of `camtl-experiment --experiment glue5_minilm`: (arm, seed, config, overrides).

  Order: the first seed of camtl_mtu, mtl and the five single-task runs, then the same for each
  other seed, then the ablation steps (first seed), so a cut-short experiment still holds the
  paper's main comparison, every arm of it over the same seeds (the targets compare arm means).
  Single-task budget: each task trains total_steps / 5 steps of b examples, the examples a task
  gets on average in a multi-task run of total_steps (an equal budget rather than MT-U's own
  per-task counts, which are only known after that run).
  """
  steps = total_steps or get_config().total_steps
  multi = (f"--config.total_steps={steps}",)
  single = (f"--config.total_steps={max(1, steps // len(GLUE5))}",)
  runs = []
  for seed in seeds:
    runs += [("camtl_mtu", seed, "glue5_minilm:camtl_mtu", multi),
             ("mtl", seed, "glue5_minilm:mtl", multi)]
    runs += [("single_task", seed, f"glue5_minilm:single_task:{t}", single) for t in GLUE5]
  runs += [(arm, seeds[0], f"glue5_minilm:{arm}", multi) for arm in ("attention", "adapter",
                                                                      "layernorm")]
  return runs
