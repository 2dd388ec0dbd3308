"""Settings of the parity suite, visible in one place.

* float64, strict dtype promotion and XLA's compile settings are set for both suites by the
  repository's root ``conftest.py``; every test here passes explicit dtypes.
* Hypothesis runs a bounded, derandomised number of examples (profile ``parity``), so the suite
  is reproducible and fits its time budget; ``HYPOTHESIS_PROFILE=thorough`` runs 10x more (also
  derandomised: the README quotes its measured maxima).
* torch runs on one CPU thread during each parity test (restored afterwards): the models are
  tiny, and with two threads on a busy 2-core machine OpenMP synchronisation made a training
  step 30x slower (measured: 100 steps 21 s vs 0.7 s).
* The largest relative error of each compared quantity is printed at the end of the run, next
  to its tolerance (:mod:`parity_tests.tolerances`).
"""

import os

import pytest
import torch
from hypothesis import settings

settings.register_profile("parity", max_examples=12, deadline=None, derandomize=True, print_blob=True)
settings.register_profile("thorough", max_examples=120, deadline=None, derandomize=True, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "parity"))


@pytest.fixture(autouse=True)
def one_torch_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def pytest_terminal_summary(terminalreporter):
    from parity_tests.tolerances import MEASURED, TOLERANCES

    if not MEASURED:
        return
    terminalreporter.section("parity: largest relative error jaxflow vs torchref (tolerance)")
    for dtype, table in TOLERANCES.items():
        cells = [f"{q} {MEASURED[dtype, q]:.1e} ({tol:.0e})" for q, tol in table.items() if (dtype, q) in MEASURED]
        terminalreporter.write_line(f"{dtype}: " + ", ".join(cells))
