"""Profile of the bench:minilm forward_plain program (b=32, T=4): thunk seconds per op (profiling.py).
python docs/results/scripts/profile_forward.py OUT_DIR  (writes the HLO text and the trace there)"""
import jax, collections, os, sys
from camtl_jax import experiment, sharding
from camtl_jax.perf import bench, profiling
from camtl_jax.configs import bench as bc
config = bc.get_config("minilm"); config.batch_size = 32
mesh = sharding.make_mesh(config.mesh.model)
encoder = experiment.encoder_shape(config)
specs = experiment.task_specs(experiment.get_tasks(config.tasks))
cands_np = bench.synthetic_candidates(specs, config.batch_size, config.max_length, encoder.vocab_size, config.seed)
cands = sharding.global_batch(cands_np, mesh, example_axis=1)
flat = sharding.global_batch(bench._flat(cands_np), mesh, example_axis=0)
[prog] = bench.variant_programs("plain", config, mesh, encoder, cands, flat, ("forward_plain",), with_step=False)
hlo = prog.compiled.as_text()
out_dir = sys.argv[1]
os.makedirs(out_dir, exist_ok=True)
open(os.path.join(out_dir, "fwd_hlo.txt"), "w").write(hlo)
trace = os.path.join(out_dir, "trfwd")
r = profiling.profile_calls(lambda i: prog.compiled(*prog.args), 3, trace, hlo, 197.6e9)
print(profiling.format_profile(r))
for o in r["top_ops"][:12]: print(f"{o['share']:6.1%} {o['op'][:28]:28s} {o['op_name'][-80:]}")
print("no dots:")
for o in r["top_ops_without_dots"][:10]: print(f"{o['share']:6.1%} {o['op'][:28]:28s} {o['op_name'][-80:]}")
src, frames = profiling.hlo_sources(hlo)
times = profiling.thunk_times(trace)
by = collections.Counter()
import re
for n, (s, c) in times.items():
  op = src.get(n, profiling.OpSource()).op_name
  key = re.sub(r"layer_\d+", "layer_*", "/".join(op.split("/")[-2:])) if op else re.sub(r"[.\d]+$", "", n)
  by[key] += s / 3
for k, v in by.most_common(15): print(f"{v:.3f} s {k}")
