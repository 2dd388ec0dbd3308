"""Test-wide JAX settings, visible in one place.

* float64 is a process-wide switch in JAX: it is enabled here for the whole test session, and
  every test passes explicit dtypes (``jaxflow.init(..., dtype=...)``), so float32 and float64 are
  both exercised. Behaviour with x64 *disabled* (the user default) is tested in subprocesses.
* Strict dtype promotion makes any silent up- or down-cast inside jaxflow an error.
* XLA compiles without backend optimisation: the tests compile hundreds of small programs and
  run each a few times, so compilation dominates; this halves the suite's CPU time (measured:
  the whole-stack tests 79 s -> 32 s). Numerics stay IEEE; tolerances are unchanged.
"""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_backend_optimization_level=0")

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_dtype_promotion", "strict")
