"""Options: the dataclasses of every command's options, the one config-file reader, the number rules."""
