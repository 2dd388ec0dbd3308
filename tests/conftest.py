"""Test-wide JAX settings, visible in one place.

* float64 is a process-wide switch in JAX: it is enabled here for the whole test session, and
  every test passes explicit dtypes (``jaxflow.init(..., dtype=...)``), so float32 and float64 are
  both exercised. Behaviour with x64 *disabled* (the user default) is tested in subprocesses.
* Strict dtype promotion makes any silent up- or down-cast inside jaxflow an error.
"""

import jax

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_dtype_promotion", "strict")
