"""Node level: residual, q/k/v and neuron or transcoder-latent channels, each behind a gate; learned masks and node
attribution find the smallest circuit at a target task loss. :data:`circuits.LEVEL` is the level's entry for
:func:`glassformer.analysis.analyze`."""
