"""jaula: isolated virtual servers on one Linux host."""

__version__ = "0.1.0"
