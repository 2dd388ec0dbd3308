"""Adapters to other libraries' interfaces (distrax)."""
