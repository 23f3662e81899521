# Each task's gradient on the shared trainable layers, at the start of the mixed run of
# docs/results/mtu_mixing.md and at its end (the checkpoint of WORKDIR, where COPA is still on its
# plateau): the norm of the gradient of the task's mean loss over 4 steps' candidates (8 per task
# and step, deterministic forward), over the trainable leaves of the encoder (the upper layers and
# pooler) and over every trainable leaf outside the heads, and each task's cosine with COPA's.
#   python docs/results/scripts/task_gradient_norms.py WORKDIR [regression_loss_scale]
import json, pathlib, sys, tempfile
import jax, jax.numpy as jnp, ml_collections, numpy as np
from flax import traverse_util
from camtl_jax import checkpoint, experiment, mtu, optim, train

workdir = pathlib.Path(sys.argv[1])
scale = float(sys.argv[2]) if len(sys.argv) > 2 else 1.0
config = ml_collections.ConfigDict(json.loads((workdir / "config.json").read_text()))
run = experiment.build_run(config, pathlib.Path(tempfile.mkdtemp()))
initial, _, labels = train.init_state(run)
_, final = checkpoint.load_state(workdir)
flat_labels = traverse_util.flatten_dict(labels)
groups = {"encoder": lambda k: k[0] == "encoder",
          "all but heads": lambda k: k[0] != "heads"}
names = [t.name for t in run.tasks]
batches = [mtu.flatten_candidates(run.loader.candidates(s)) for s in range(4)]


def task_loss(params, batch, t):
  rows = np.flatnonzero((np.asarray(batch["task_id"]) == t) & (np.asarray(batch["weight"]) > 0))
  sub = {k: v[rows] for k, v in batch.items()}
  out = run.model.apply({"params": params}, sub, deterministic=True)
  loss = out["loss"] * (scale if run.tasks[t].type == "regression" else 1.0)
  return jnp.mean(loss)


def gradients(params):
  """{task: flat {path: mean gradient over the 4 steps}}"""
  params = jax.tree.map(jnp.asarray, params)
  grad = jax.grad(task_loss)
  out = {}
  for t, name in enumerate(names):
    g = [traverse_util.flatten_dict(grad(params, b, t)) for b in batches]
    out[name] = {k: sum(x[k] for x in g) / len(g) for k in g[0]}
  return out


report = {}
for label, state in (("init", initial), ("final", final)):
  grads = gradients(state["params"])
  for gname, keep in groups.items():
    keys = [k for k in flat_labels if flat_labels[k] == optim.TRAINABLE and keep(k)]
    vec = {n: np.concatenate([np.ravel(grads[n][k]) for k in keys]) for n in names}
    copa = vec.get("superglue/copa")
    report[f"{label} / {gname}"] = {
        n: {"norm": float(np.linalg.norm(v)),
            "cos_with_copa": None if copa is None else
            float(v @ copa / (np.linalg.norm(v) * np.linalg.norm(copa) + 1e-30))}
        for n, v in vec.items()}
print(json.dumps({"workdir": str(workdir), "regression_loss_scale": scale, "report": report},
                 indent=1))
