"""Conversion of existing models (GPT-2 import, MLP distillation)."""
