"""ryx-desktop: a tray app and local OpenAI-compatible proxy for vLLM models running in Docker."""

__version__ = "0.1.0"
