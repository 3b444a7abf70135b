"""Where the dbt project and its profiles are: `DBT_PROJECT_DIR` / `DBT_PROFILES_DIR` (dbt's own
variables, set in images), else the project folder found next to this package (a repository
checkout) or from the working directory upwards."""

from __future__ import annotations

import os
from pathlib import Path

from mlp_common.exit_codes import ExitCode, StageError

PROJECT_FILE = "dbt_project.yml"


def _find_project() -> Path | None:
    here = Path(__file__).resolve()
    cwd = Path.cwd().resolve()
    candidates = [*here.parents, cwd, *cwd.parents]
    for folder in candidates:
        for candidate in (folder, folder / "dbt"):
            if (candidate / PROJECT_FILE).is_file():
                return candidate
    return None


def project_dir() -> Path:
    configured = os.environ.get("DBT_PROJECT_DIR")
    found = Path(configured) if configured else _find_project()
    if found is None or not (found / PROJECT_FILE).is_file():
        where = configured or "next to the dbt_stage package or the working directory"
        raise StageError(f"no dbt project ({PROJECT_FILE}) found {where}; set DBT_PROJECT_DIR", ExitCode.BAD_ARGUMENT)
    return found.resolve()


def profiles_dir(project: Path) -> Path:
    configured = os.environ.get("DBT_PROFILES_DIR")
    folder = Path(configured) if configured else project
    if not (folder / "profiles.yml").is_file():
        raise StageError(f"no profiles.yml in {folder}; set DBT_PROFILES_DIR", ExitCode.BAD_ARGUMENT)
    return folder.resolve()


def target_dir(project: Path) -> Path:
    """dbt's artifacts folder (run_results.json, manifest.json): `DBT_TARGET_PATH` when set, as dbt does."""
    configured = os.environ.get("DBT_TARGET_PATH")
    if not configured:
        return project / "target"
    path = Path(configured)
    return path if path.is_absolute() else project / path
