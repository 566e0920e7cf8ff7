"""A run: its directory's layout and files, its status and state, checkpoints, locks, the runs root."""
