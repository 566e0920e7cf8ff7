"""`bertmtl serve`: a trained model answering over HTTP.

- `worker.py`: the model on a thread of its own (`Batcher`): requests that arrive together are
  answered in one pass of the Predictor, the one answering path of `predict`, stdin and the TUI;
  `ModelHolder` keeps the checkpoint that answers and, with --follow, swaps in a run's newer best
  checkpoint between passes.
- `app.py`: the ASGI application (FastAPI under uvicorn): routes, limits, the token, metrics.

Needs the `serve` extra (FastAPI, uvicorn, prometheus_client); imported only by the command.
"""
