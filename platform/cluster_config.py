"""Cluster-launcher configs (`cluster/aws.yaml`, `cluster/gcp.yaml`): checked here the way `ray up` checks them.

`ray up` fills a config's defaults from its provider and validates it against the JSON schema that
ships inside Ray (`ray/autoscaler/ray-schema.json`); doing the same before calling it turns a typo
into exit 2 with the field named, instead of a half-started cluster.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml


def check(path: Path) -> list[str]:
    """Every problem found in a cluster-launcher YAML (empty: `ray up` will accept it)."""
    if not path.is_file():
        return [f"{path}: no such file"]
    try:
        config: Any = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        return [f"{path}: not YAML: {e}"]
    import jsonschema
    from ray.autoscaler._private.util import prepare_config, validate_config

    try:
        validate_config(prepare_config(config))
    except jsonschema.ValidationError as e:
        where = ".".join(str(p) for p in e.absolute_path) or "(top level)"
        return [f"{path}: {where}: {e.message}"]
    except (ValueError, RuntimeError, KeyError, TypeError, AttributeError) as e:
        return [f"{path}: {e}"]
    return []
