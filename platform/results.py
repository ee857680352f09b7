"""Cell results read back from the store: the machine-readable answer of a sweep (`amctl report NAME --json`).

`mechanism` and `task` are the cell's labels (`lstm[d_model=64]` for a variant, else the registry name);
`mechanism_name`/`task_name` the registry names; each axis value is also a field of its own
(`"mechanism.d_model": 64`), so a notebook can plot against it directly.
"""

from __future__ import annotations

from typing import Any

from amlab.platform.store import Store


def cell_results(store: Store, name: str) -> list[dict[str, Any]]:
    with store.session() as s:
        sweep = store.named(s, name)
        return [
            {
                "mechanism": c.mechanism_label, "task": c.task_label, "mechanism_name": c.mechanism, "task_name": c.task,
                "mechanism_variant": c.mechanism_variant, "task_variant": c.task_variant, "axes": dict(c.axes or {}),
                **dict(c.axes or {}),
                "metric": c.metric, "higher_is_better": c.higher_is_better,
                "value": c.value, "per_seed": c.per_seed or {}, "best_params": c.best_params or {},
                "params_count": c.params_count, "state_size": c.state_size, "status": str(c.status),
                "config_hash": c.config_hash, "mlflow_run_id": c.mlflow_run_id,
                "trials": len(c.trials), "early_stopped": sum(t.early_stopped for t in c.trials),
            }
            for c in sweep.cells
        ]
