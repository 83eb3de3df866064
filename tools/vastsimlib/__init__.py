"""vastsim: a stateful, local stand-in for the vast.ai REST API (see docs/vastsim.md)."""
