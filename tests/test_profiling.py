"""profiling.py: a real jax.profiler trace of a compiled program read back per HLO op, with the
dots' FLOPs counted from the HLO shapes and each op put in its part of a train step."""
import jax
import jax.numpy as jnp
import pytest

from camtl_jax.perf import profiling
from camtl_jax.cli import bench as bench_cli


def _grad_program(m=16, k=64, n=32):
  """The gradient of sum(tanh(x @ w)) w.r.t. w: one forward dot and one backward dot, each
  2*m*k*n FLOPs."""
  def loss(w, x):
    return jnp.tanh(x @ w).sum()
  program = jax.jit(jax.grad(loss))
  w, x = jnp.ones((k, n)), jnp.ones((m, k))
  return program, (w, x), 2 * m * k * n


def test_dot_flops_are_counted_from_the_hlo_shapes():
  program, args, flops = _grad_program()
  sources, _ = profiling.hlo_sources(program.lower(*args).compile().as_text())
  # Every dot, and every fusion calling one, carries 2*m*k*n; nothing else carries FLOPs.
  assert {s.dot_flops for s in sources.values() if s.dot_flops} == {flops}
  assert any(s.calls and s.dot_flops for s in sources.values())


def test_profile_splits_a_grad_program_into_forward_and_backward(tmp_path):
  program, args, flops = _grad_program()
  hlo = program.lower(*args).compile().as_text()
  report = profiling.profile_calls(lambda i: program(*args), 3, tmp_path, hlo,
                                   peak_flops_per_s=1e12)
  parts = report["parts"]
  assert set(parts) <= {"update forward", "update backward"} and "update backward" in parts
  # Each traced thunk is counted per step; the two dots' FLOPs come back exactly.
  assert sum(p["dot_flops"] for p in parts.values()) == pytest.approx(2 * flops)
  assert abs(sum(p["share"] for p in parts.values()) - 1.0) < 1e-9
  assert report["thunks_per_step"] == int(report["thunks_per_step"]) > 0
  assert report["top_ops"][0]["seconds_per_step"] > 0
  assert "update backward" in profiling.format_profile(report)


def test_parts_follow_op_names_and_the_python_stack():
  frames = {1: ["/x/camtl_jax/optim.py:update", "/x/camtl_jax/train.py:train_step"],
            2: ["/x/camtl_jax/train.py:train_step"], 3: ["/x/camtl_jax/sampling.py:select"]}
  part = lambda op_name, frame=0: profiling.step_part(  # noqa: E731
      profiling.OpSource(op_name=op_name, frame=frame), frames)
  assert part("jit(train_step)/while/body/CAMTL/encoder/layer_0/output/dot_general") == (
      "scoring forward")
  assert part("jit(train_step)/while/body/jvp(CAMTL)/encoder/x") == "update forward"
  assert part("jit(train_step)/while/body/transpose(jvp(CAMTL))/x") == "update backward"
  assert part("jit(train_step)/add", 1) == part("jit(train_step)/select_n", 2) == (
      profiling.PARAMETER_SIDE)
  assert part("jit(train_step)/sort", 3) == profiling.OTHER


def test_bench_profile_of_a_synthetic_config_is_a_one_line_error(capsys):
  assert bench_cli.main(["--config", "tiny", "--profile", "/tmp/unused"]) != 0
  err = capsys.readouterr().err.strip()
  assert len(err.splitlines()) == 1 and "bench:glue5" in err
