"""Cluster-launcher configs (`cluster/aws.yaml`, `cluster/gcp.yaml`): checked here the way `ray up` checks them.

`ray up` fills a config's defaults from its provider and validates it against the JSON schema that
ships inside Ray (`ray/autoscaler/ray-schema.json`); doing the same before calling it turns a typo
into exit 2 with the field named, instead of a half-started cluster.  A config that passes the schema
is then checked for what an amctl cluster needs and Ray does not ask for (`needs`): mistakes that
start a cluster fine and fail the first sweep on it.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

# an EC2 instance profile (by Arn or Name) lets the node write AMCTL_RAY_STORAGE / artifacts on S3
# a GCE service account with one of these scopes can write GCS (the API's default is no account at all)
GCS_WRITE_SCOPES = {f"https://www.googleapis.com/auth/{s}" for s in
                    ("cloud-platform", "devstorage.read_write", "devstorage.full_control")}
# on the host, before Ray starts the node's container: a bounded wait for the NVIDIA driver
DRIVER_WAIT = re.compile(r"\btimeout\s+\d+.*\bnvidia-smi\b", re.S)


def check(path: Path) -> list[str]:
    """Every problem found in a cluster-launcher YAML (empty: `ray up` will accept it and amctl can run on it)."""
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
    return [f"{path}: {problem}" for problem in needs(config)]


def needs(config: dict[str, Any]) -> list[str]:
    """What a schema-valid config lacks for amctl, one line per node type and field.

    - every node type declares both `CPU` and `GPU` in `resources`, every worker type its `max_workers`: the
      autoscaler plans GPU demand from these shapes (a type at `min_workers: 0` has no node to learn them from);
    - AWS: every node type has an `IamInstanceProfile` (the head launches workers and passes their role;
      workers write Tune checkpoints to S3);
    - GCP: every worker type has a service account with a GCS write scope, and every GPU type waits (bounded)
      for the NVIDIA driver in its own `initialization_commands`.  Those run on the host before Ray starts the
      node's container, and Ray gives the container the GPUs only if `nvidia-smi` works at that moment.
    """
    provider = config["provider"]["type"]
    problems = []
    for name, node in config["available_node_types"].items():
        where = f"available_node_types.{name}"
        worker = name != config["head_node_type"]
        resources, node_config = node.get("resources", {}), node["node_config"]
        if worker and "max_workers" not in node:  # Ray's default is the whole cluster's max_workers, of this type
            problems.append(f"{where}: declare max_workers (the most nodes of this type the autoscaler may start)")
        missing = [r for r in ("CPU", "GPU") if r not in resources]
        if missing:
            problems.append(f"{where}.resources: declare {' and '.join(missing)} (0 when the node has none): the "
                            "autoscaler plans from these shapes")
        if provider == "aws" and not {"Arn", "Name"} & set(node_config.get("IamInstanceProfile", {})):
            problems.append(f"{where}.node_config: add IamInstanceProfile: {{Arn: ...}} so the node can "
                            f"{'write to S3' if worker else 'start workers and write to S3'} (cluster/README.md)")
        if provider == "gcp" and worker and not any(GCS_WRITE_SCOPES & set(a.get("scopes", []))
                                                    for a in node_config.get("serviceAccounts", [])):
            problems.append(f"{where}.node_config: add serviceAccounts with a scope that writes GCS, e.g. "
                            "https://www.googleapis.com/auth/cloud-platform (cluster/README.md)")
        if provider == "gcp" and resources.get("GPU", 0) > 0 and \
                not DRIVER_WAIT.search("\n".join(node.get("initialization_commands", []))):
            problems.append(f"{where}.initialization_commands: wait for the NVIDIA driver (`timeout N ... nvidia-smi`) "
                            "before Ray starts the container, or it starts without GPUs (cluster/README.md)")
    return problems
