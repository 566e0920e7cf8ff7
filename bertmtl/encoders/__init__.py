"""Encoders: their configuration, tokenizers, weights by name (built-ins and the Hugging Face Hub)."""

# The built-in encoders' names, without torch (shell completion asks for them); weights.BUILTINS
# describes each (tests/test_cli_core.py checks the two agree).
BUILTIN_NAMES = ("minilm", "mpnet")
