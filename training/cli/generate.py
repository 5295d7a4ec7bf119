"""``glassformer generate``: sample text from a model directory."""

from __future__ import annotations

from pathlib import Path

from glassformer.training.checks import check_model_dir


def generate(
    model_dir: str,
    prompt: str = "",
    max_new_tokens: int = 100,
    temperature: float = 0.8,
    top_k: int | None = 50,
    seed: int = 0,
) -> None:
    """Sample a continuation of ``--prompt`` from a model directory.

    Args:
        model_dir: A model directory.
        prompt: Text to continue (empty: start from the end-of-text token).
        max_new_tokens: Tokens to generate.
        temperature: Softmax temperature; 0 is greedy.
        top_k: Sample among the k most likely tokens (null: all).
        seed: Seed of the sampler.
    """
    check_model_dir(model_dir, recorded_data=False)
    print(sample_text(model_dir, prompt, max_new_tokens, temperature, top_k, seed))


def sample_text(model_dir: str | Path, prompt: str = "", max_new_tokens: int = 100, temperature: float = 0.8,
                top_k: int | None = 50, seed: int = 0) -> str:
    """The prompt and a sampled continuation from a model directory, decoded (what `glassformer generate` prints).

    Example:
        >>> print(sample_text("runs/tiny", "def add(a, b):", max_new_tokens=20))  # doctest: +SKIP
    """
    import torch

    from glassformer.archs import load_model_dir
    from glassformer.training.generate import sample
    from glassformer.training.tokenizer import EOT, load_tokenizer

    model = load_model_dir(model_dir).eval()
    tok = load_tokenizer(model_dir)
    ids = tok.encode(prompt).ids if prompt else [tok.token_to_id(EOT)]
    gen = torch.Generator().manual_seed(seed)
    out = sample(model, torch.tensor([ids]), max_new_tokens, temperature, top_k, gen)
    return tok.decode(out[0].tolist() if prompt else out[0, 1:].tolist(), skip_special_tokens=True)
