"""Where amctl keeps things: one home folder with embedded defaults, each store switchable by one setting."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

# No network at run time but loopback: Ray's usage statistics and MLflow's telemetry would phone home.  Set for
# this process on import (every amctl process imports this module first) and handed to every worker (ensure_ray).
OFFLINE = {"RAY_USAGE_STATS_ENABLED": "0", "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "1"}
for _key, _value in OFFLINE.items():
    os.environ.setdefault(_key, _value)
WITHHELD = "AMCTL_WITHHELD"  # what a submitter kept out of a job's runtime env (redacted): the cluster must provide it
CREDENTIALS = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN")


@dataclass(frozen=True)
class Settings:
    home: Path
    db_url: str  # amctl registry (SQLAlchemy)
    mlflow_uri: str  # MLflow tracking backend
    artifacts: str  # MLflow artifact root for new experiments; "" = the tracking server's own (its --serve-artifacts)
    optuna_url: str  # Optuna studies
    ray_storage: str  # Tune/Train storage_path

    @classmethod
    def load(cls) -> Settings:
        """Read `AMCTL_HOME` (default ~/.amctl) and the per-store overrides from the environment."""
        home = cls.home_path()
        try:
            home.mkdir(mode=0o700, parents=True, exist_ok=True)  # created private: it holds the databases
        except OSError as e:
            from amlab.platform.errors import StoreError

            raise StoreError(f"AMCTL_HOME={home} cannot be amctl's home ({e.strerror or e}); "
                             "point AMCTL_HOME at a folder you can write") from None
        env = os.environ.get
        mlflow_uri = env("MLFLOW_TRACKING_URI", f"sqlite:///{home / 'mlflow.db'}")
        # one bucket for everything durable (AMCTL_STORAGE=s3://bucket/prefix); a tracking server keeps artifacts itself
        bucket = env("AMCTL_STORAGE", "").rstrip("/")
        local = "" if mlflow_uri.startswith(("http://", "https://")) else local_artifacts(home)
        return cls(
            home=home,
            db_url=env("AMCTL_DB_URL", f"sqlite:///{home / 'amctl.db'}"),
            mlflow_uri=mlflow_uri,
            artifacts=env("AMCTL_ARTIFACTS", f"{bucket}/artifacts" if bucket else local),
            optuna_url=env("AMCTL_OPTUNA_URL", f"sqlite:///{home / 'optuna.db'}"),
            ray_storage=env("AMCTL_RAY_STORAGE", f"{bucket}/tune" if bucket else str(home / "ray")),
        )

    @staticmethod
    def home_path() -> Path:
        """Where AMCTL_HOME points, without creating it (`load` does)."""
        return Path(os.environ.get("AMCTL_HOME", Path.home() / ".amctl")).expanduser().resolve()


def local_artifacts(home: Path) -> str:
    """The artifact folder in AMCTL_HOME: the default root, and what a local server keeps when none is set."""
    return (home / "artifacts").as_uri()


def redact(url: str) -> str:
    """The URL with its password shown as ***: what may be displayed, logged or handed to Ray."""
    parts = urlsplit(url)
    if not parts.password:
        return url
    user, _, host = parts.netloc.rpartition("@")
    return urlunsplit(parts._replace(netloc=f"{user.split(':', 1)[0]}:***@{host}"))


def shown(name: str, value: str) -> str:
    """How a variable may be shown: a credential as *** (or '' when unset), a URL without its password."""
    return ("***" if value else "") if name in CREDENTIALS else redact(value)


def split_secrets(env: dict[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    """(the variables that may travel through Ray, the redacted form of those that may not)."""
    public = {k: v for k, v in env.items() if shown(k, v) == v}
    return public, {k: shown(k, v) for k, v in env.items() if k not in public}


def check_withheld() -> None:
    """In a job's driver: the credentials its submitter withheld must be in this cluster's own environment."""
    expected = json.loads(os.environ.get(WITHHELD) or "{}")
    wrong = [f"{k} (expected {v})" for k, v in expected.items() if shown(k, os.environ.get(k, "")) != v]
    if wrong:
        from amlab.platform.errors import StoreError

        raise StoreError("amctl never sends credentials through Ray, and this cluster's environment does not hold "
                         "them; set them on its nodes (cluster/README.md, 'Stores')", wrong)
