"""loadgen: a trio-based load generator for the OpenGate HTTP operations protocol."""

__version__ = "0.1.0"
