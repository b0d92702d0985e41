"""Serving a trained model: an OpenAI-compatible HTTP server with continuous batching and a page
to try it in a browser; `python -m smallgpt.serve`."""

from smallgpt.serve.scheduler import QueueFull, SamplingParams, Scheduler, Sequence
from smallgpt.serve.server import CompletionRequest, RequestError, create_app, parse_completion

__all__ = [
    "CompletionRequest",
    "QueueFull",
    "RequestError",
    "SamplingParams",
    "Scheduler",
    "Sequence",
    "create_app",
    "parse_completion",
]
