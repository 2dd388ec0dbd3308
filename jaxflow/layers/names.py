"""The names of the layers' options: masks, scale maps, permutations (one home each, no jax here,
so that the command line's parser and ``--help`` load without it)."""

__all__ = ["MASKS", "SCALES", "PERMUTATIONS"]

#: named coupling masks (:mod:`jaxflow.layers.masks`); a tuple of bools is the explicit form
MASKS = ("half", "alternate")

#: scale maps of an affine coupling (:mod:`jaxflow.layers.scales`)
SCALES = ("exp", "tanh", "sigmoid")

#: fixed permutations (:mod:`jaxflow.layers.permute`)
PERMUTATIONS = ("reverse", "random")
