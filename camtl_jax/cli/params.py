"""`camtl-params`: the parameter report of a config's model and task list (no weights read).

  camtl-params --config glue_base                 # BERT-base shape, the 8 GLUE tasks
  camtl-params --model /path/to/hf_dir            # that encoder with the 8 GLUE tasks
  camtl-params --size large                       # BERT-large shape, skip-chain adapters

Frozen counts come from the optimizer's own freeze rule, so they say what training freezes.
"""
from __future__ import annotations

import sys
from typing import Sequence

from camtl_jax.cli import common


def make_parser():
  """The camtl-params command line."""
  parser = common.new_parser("camtl-params", __doc__)
  common.add_config_argument(parser, required=False)
  parser.add_argument("--model", help="override the encoder: a converted or HF model directory "
                      "(only its config is read), 'minilm', or a known name (bert-base-uncased, "
                      "bert-large-uncased, roberta-base, ...)")
  parser.add_argument("--size", choices=("base", "large"), default="base",
                      help="without --config: BERT-base with the top adapter, or BERT-large with "
                           "the skip chain")
  parser.add_argument("--max-length", type=int, default=128, help="without --config")
  return parser


def _config(args):
  """The config to report: --config's, or the 8 GLUE tasks on a base / large shape."""
  from camtl_jax import experiment  # pylint: disable=import-outside-toplevel
  from camtl_jax.models import camtl  # pylint: disable=import-outside-toplevel
  if args.config:
    config = common.load_config(args.config, args.overrides)
  else:
    config = common.load_config("glue_base")
    config.unlock()
    config.model_path = f"bert-{args.size}"
    config.max_length = args.max_length
    config.tasks = experiment.GLUE_TASKS
    config.model.adapter = camtl.default_config(args.size).adapter
  if args.model:
    config.unlock()
    config.model_path = args.model
  return config


def _report(args) -> None:
  from camtl_jax import experiment  # pylint: disable=import-outside-toplevel
  config = _config(args)
  encoder = experiment.encoder_shape(config)
  model = experiment.build_model(config, encoder,
                                 experiment.task_specs(experiment.config_tasks(config)))
  print(f"{encoder.model_type}: {encoder.num_layers} layers, d={encoder.hidden_size}; "
        f"{len(model.tasks)} tasks; {model.config}")
  print(experiment.format_parameter_report(experiment.parameter_report(
      model, config.freeze_embeddings)))


def main(argv: Sequence[str] | None = None) -> int:
  return common.run("camtl-params", make_parser(), _report, argv)


if __name__ == "__main__":
  sys.exit(main())
