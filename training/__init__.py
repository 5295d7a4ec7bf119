"""glassformer.training."""
