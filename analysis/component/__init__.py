"""Component level: the graph of embeddings, attention heads (with their q, k and v inputs), MLPs and logits; edge
patching, attribution (exact, EAP, EAP-IG), circuit selection and faithfulness. :data:`run.LEVEL` is the level's
entry for :func:`glassformer.analysis.analyze`."""
