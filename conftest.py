"""Settings shared by both test suites, ``tests/`` and ``parity_tests/``, visible in one place.

* float64 is a process-wide switch in JAX: it is enabled here for the whole session, and every
  test passes explicit dtypes (``jaxflow.init(..., dtype=...)``), so float32 and float64 are both
  exercised. Behaviour with x64 *disabled* (the user default) is tested in subprocesses.
* Strict dtype promotion makes any silent up- or down-cast inside jaxflow an error.
* XLA compiles without backend optimisation: the suites compile hundreds of small programs and
  run each a few times, so compilation dominates; this halves their CPU time (measured: the core
  suite 320 s -> 117 s). Arithmetic stays IEEE; the tolerances hold at both settings.
"""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_backend_optimization_level=0")

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_dtype_promotion", "strict")


#: the slowest test files (measured in a fresh-clone run), scheduled first: the two xdist workers
#: (``-n 2 --dist loadfile``) then end on short files instead of one waiting for the other
SLOWEST_FIRST = ("tests/test_bench.py", "parity_tests/test_composed.py", "tests/test_cli.py",
                 "tests/test_library_hardening.py", "parity_tests/test_parity.py", "tests/test_layers.py",
                 "parity_tests/test_image_parity.py", "parity_tests/test_training.py", "tests/test_spline.py",
                 "tests/test_hostile.py", "tests/test_multi_device.py", "tests/test_user_paths.py")


def pytest_collection_modifyitems(items):
    rank = {path: i for i, path in enumerate(SLOWEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::")[0], len(SLOWEST_FIRST)))  # stable: the rest in order
