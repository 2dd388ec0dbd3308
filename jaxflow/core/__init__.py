"""The core: the layer protocol and its composition, flow specs, the flow's functions, init and validation."""
