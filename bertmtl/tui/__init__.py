"""`bertmtl tui`: watch a run live (loss curves, dev metrics, progress) and try its model.

Textual is imported only here, so the other commands start without it.
"""
