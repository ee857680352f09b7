"""Mechanisms, tasks, and the model that joins them (import root: amlab.workloads)."""
