"""``glassformer eval``: validation loss and perplexity of a model directory."""

from __future__ import annotations

from glassformer.training.checks import check_model_dir
from glassformer.training.config import DataConfig


def evaluate(
    model_dir: str,
    data: DataConfig | None = None,
    batches: int = 50,
    batch_size: int = 16,
) -> None:
    """Validation loss and perplexity of a model directory on the corpus it was trained on, or on ``--data``.

    Args:
        model_dir: A model directory written by `glassformer train`.
        data: Corpus to evaluate on; default: the corpus recorded in the model's training.json.
        batches: Validation batches (fixed windows).
        batch_size: Windows per batch.
    """
    from glassformer.training.evaluate import evaluate_model_dir

    check_model_dir(model_dir, recorded_data=data is None)
    result = evaluate_model_dir(model_dir, data, batches=batches, batch_size=batch_size)
    print(f"validation loss {result['loss']:.4f} nats/token, perplexity {result['perplexity']:.2f} "
          f"over {result['tokens']} tokens; unigram entropy {result['unigram_entropy']:.4f}")
