#!/bin/sh
# The accelerator benchmark in one call, from the repository root, after pip install -e ".[bench]"
# with a CUDA jaxlib (pip install -U "jax[cuda12]"); results in bench/results/.
exec python -m bench --suite accelerator "$@"
