"""Encoders: their configuration, tokenizers, weights by name (built-ins and the Hugging Face Hub)."""
