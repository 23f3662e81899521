"""Benchmark shapes for camtl-bench (DESIGN 8): T=4 demo tasks (one per single-sequence head type:
classification, regression, tagging, span, so K=1), b=32, L=128, the CA-MTL defaults.

  camtl-bench --config bench:minilm --steps 5 --json /tmp/bench_minilm.json
  camtl-bench --config bench:bert-base --steps 3 --json /tmp/bench_base.json

`minilm` reads the shape of the all-MiniLM-L6-v2 checkpoint (6 layers, d=384); `bert-base` is the
BERT-base shape built in code (models/camtl.py NAMED_ENCODERS), so no checkpoint is needed.
Weights are random and the candidates synthetic: only shapes matter for speed.
"""
from camtl_jax.configs import common

BENCH_TASKS = ("demo/sentiment", "demo/similarity", "demo/entities", "demo/span")
MODELS = {"minilm": "minilm", "bert-base": "bert-base", "bert-large": "bert-large"}


def get_config(arg="minilm"):
  if arg not in MODELS:
    raise ValueError(f"bench model {arg!r} unknown; choose one of {sorted(MODELS)}")
  c = common.base()
  c.model_path = MODELS[arg]
  c.tasks = BENCH_TASKS
  c.max_length = 128
  c.batch_size = 32
  c.data_dir = ""
  return c
