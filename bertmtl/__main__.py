"""`python -m bertmtl` (and `torchrun -m bertmtl train ...`)."""

from .cli import main

main(prog_name="bertmtl")
