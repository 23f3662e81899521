"""Benchmark shapes for camtl-bench (DESIGN 8): T=4 demo tasks (one per single-sequence head type:
classification, regression, tagging, span, so K=1), b=32, L=128, the CA-MTL defaults.

  camtl-bench --config bench:minilm --steps 5 --json /tmp/bench_minilm.json
  camtl-bench --config bench:bert-base --steps 3 --json /tmp/bench_base.json

`glue5` times the MT-U step on real GLUE candidate sets instead (camtl_jax/bench_real.py);
`glue5-base` the same at the BERT-base shape with random weights.
`minilm` reads the shape of the all-MiniLM-L6-v2 checkpoint (6 layers, d=384); `bert-base` is the
BERT-base shape built in code (models/camtl.py NAMED_ENCODERS), so no checkpoint is needed.
Weights are random and the candidates synthetic: only shapes matter for speed.
"""
from camtl_jax.configs import common, glue5_minilm

BENCH_TASKS = ("demo/sentiment", "demo/similarity", "demo/entities", "demo/span")
MODELS = {"minilm": "minilm", "bert-base": "bert-base", "bert-large": "bert-large"}


def get_config(arg="minilm"):
  if arg == "glue5":
    return glue5()
  if arg == "glue5-base":
    return glue5(encoder="bert-base")
  if arg not in MODELS:
    raise ValueError(f"bench model {arg!r} unknown; choose one of {sorted(MODELS)}, 'glue5' or "
                     "'glue5-base'")
  c = common.base()
  c.model_path = MODELS[arg]
  c.tasks = BENCH_TASKS
  c.max_length = 128
  c.batch_size = 32
  c.data_dir = ""
  # Synthetic candidates fill all L positions, and XLA counts a while loop's body once: the padded
  # update is the program whose FLOPs (and so peak fraction) the report gets right. The packed
  # update users run by default: --config.pack_update=True (its FLOPs then count one chunk).
  c.pack_update = False
  return c


def glue5(encoder=""):
  """Real candidate sets: the CA-MTL + MT-U step of configs/glue5_minilm.py (RTE, MRPC, STS-B,
  SST-2, CoLA from config.data_dir, MiniLM, b=16, L=128), packed against padded (bench_real.py).
  encoder: a NAMED_ENCODERS shape run with random weights instead (glue5-base: BERT-base), on the
  same candidates tokenised by MiniLM's tokenizer (BERT's uncased vocabulary)."""
  c = glue5_minilm.get_config("camtl_mtu")
  c.bench_real_data = True
  c.bench_encoder = encoder
  return c
