"""ART inside other training stacks: :mod:`.lightning` (Lightning) and :mod:`.transformers` (Hugging Face Trainer)."""
