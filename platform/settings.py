"""Where amctl keeps things: one home folder with embedded defaults, each store switchable by one setting."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Settings:
    home: Path
    db_url: str  # amctl registry (SQLAlchemy)
    mlflow_uri: str  # MLflow tracking backend
    artifacts: str  # MLflow artifact root for new experiments
    optuna_url: str  # Optuna studies
    ray_storage: str  # Tune/Train storage_path

    @classmethod
    def load(cls) -> Settings:
        """Read `AMCTL_HOME` (default ~/.amctl) and the per-store overrides from the environment."""
        home = Path(os.environ.get("AMCTL_HOME", Path.home() / ".amctl")).expanduser().resolve()
        try:
            home.mkdir(mode=0o700, parents=True, exist_ok=True)  # created private: it holds the databases
        except OSError as e:
            from amlab.platform.errors import StoreError

            raise StoreError(f"AMCTL_HOME={home} cannot be amctl's home ({e.strerror or e}); "
                             "point AMCTL_HOME at a folder you can write") from None
        env = os.environ.get
        return cls(
            home=home,
            db_url=env("AMCTL_DB_URL", f"sqlite:///{home / 'amctl.db'}"),
            mlflow_uri=env("MLFLOW_TRACKING_URI", f"sqlite:///{home / 'mlflow.db'}"),
            artifacts=env("AMCTL_ARTIFACTS", (home / "artifacts").as_uri()),
            optuna_url=env("AMCTL_OPTUNA_URL", f"sqlite:///{home / 'optuna.db'}"),
            ray_storage=env("AMCTL_RAY_STORAGE", str(home / "ray")),
        )
