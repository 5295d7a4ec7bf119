"""glassformer.analysis."""
