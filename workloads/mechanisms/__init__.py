"""Mechanisms: one module per mechanism (or family); each registers itself with `@mechanism`."""
