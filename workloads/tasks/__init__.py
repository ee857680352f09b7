"""Tasks: one module per task (or family); each registers itself with `@task`."""
