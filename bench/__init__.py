"""grpo-rm-bench: a benchmark harness comparing GRPO-RM against SFT for representation models."""

__version__ = "0.1.0"
