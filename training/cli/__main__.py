"""``python -m glassformer.training.cli``: the same as the ``glassformer`` console script."""

from glassformer.training.cli import main

main()
