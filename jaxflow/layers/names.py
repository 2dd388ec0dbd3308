"""The names of the layers' options: masks, scale maps, permutations (one home each, no jax here,
so that the command line's parser and ``--help`` load without it)."""

__all__ = ["MASKS", "IMAGE_MASKS", "VECTOR_MASKS", "SCALES", "PERMUTATIONS", "PREPROCESSING", "VECTOR_FLOWS", "IMAGE_FLOWS"]

#: named coupling masks of vector events (:mod:`jaxflow.layers.masks`); a tuple of bools is the explicit form
MASKS = ("half", "alternate")

#: named coupling masks of image events ``(H, W, C)`` (:mod:`jaxflow.layers.masks`)
IMAGE_MASKS = ("checkerboard", "channel")

#: the masks the command line offers for vector data; ``checkerboard`` needs the image layout
#: behind the vector (:attr:`jaxflow.data.Splits.image_shape`) and becomes explicit bool masks
VECTOR_MASKS = MASKS + IMAGE_MASKS[:1]

#: scale maps of an affine coupling (:mod:`jaxflow.layers.scales`)
SCALES = ("exp", "tanh", "sigmoid")

#: fixed permutations (:mod:`jaxflow.layers.permute`)
PERMUTATIONS = ("reverse", "random")

#: the fixed first layers of :func:`jaxflow.train.preprocess`
PREPROCESSING = ("standardize", "logit", "none")

#: the command line's flows of vector data: the article's affine ``realnvp`` (and its compositions),
#: the neural spline flow ``nsf`` (:class:`jaxflow.NeuralSplineFlow`), the masked autoregressive
#: flow ``maf`` (:class:`jaxflow.MAF`) and the autoregressive spline flow ``nsf-ar``
VECTOR_FLOWS = ("realnvp", "nsf", "maf", "nsf-ar")

#: the command line's flows of image data: ``realnvp`` (:class:`jaxflow.MultiScaleRealNVP`) or ``glow``
#: (:class:`jaxflow.Glow`)
IMAGE_FLOWS = ("realnvp", "glow")
