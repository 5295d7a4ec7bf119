"""glassformer.kernels."""
