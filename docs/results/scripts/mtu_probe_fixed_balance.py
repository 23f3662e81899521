# Probe (2026-12-05, commit 1411d15): the mixed command of docs/results/mtu_mixing.md with fixed factors on each
# task's loss, w_t = mean(n) / n_t, from each task's gradient norm at init on the shared trainable
# layers (mtu_task_gradient_norms.json, "init / all but heads"): every task's gradient then has
# the same norm at the start. experiment.task_loss_scale (the [T] factors update.example_weights
# applies) is replaced before the run; nothing else changes.
#   python docs/results/scripts/mtu_probe_fixed_balance.py CAMTL-TRAIN-ARGS...
import sys
from camtl_jax import experiment, main

NORMS = {"glue/rte": 0.242, "glue/mrpc": 0.581, "glue/stsb": 1.0, "glue/cola": 0.374,
         "wnut17": 2.796, "superglue/copa": 0.121}
mean = sum(NORMS.values()) / len(NORMS)
experiment.task_loss_scale = lambda config, tasks: tuple(mean / NORMS[t.name] for t in tasks)
sys.exit(main.main(sys.argv[1:]))
