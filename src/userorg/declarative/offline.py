"""``userorg declarative plan DIR [--against SOURCE]``: the plan, offline, for a config repo's CI.

DIR is one org folder (it holds YAML files) or a folder of org folders (each subfolder that
holds YAML files is an org, named after the folder). The plan compares DIR with a baseline:
nothing (every entry is an addition), another directory of the same shape, or a Git
repository (a local path, ``file://`` or ``https://`` URL) at ``--branch``, with the org
folders under ``--path``. No database and no running service are involved.

Exit codes: 0 no change, 2 changes, 1 invalid configuration (errors name file, line, field).
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from userorg.declarative.plan import ActualOrg, Plan, compute_plan
from userorg.declarative.schema import (
    ConfigError,
    DesiredOrg,
    InvalidConfig,
    is_config_file,
    load_documents,
)
from userorg.declarative.source import GitSource, SourceError, local_path

EXIT_NO_CHANGES = 0
EXIT_INVALID = 1
EXIT_CHANGES = 2


@dataclass
class OfflineResult:
    plans: list[Plan]
    exit_code: int

    def to_json(self) -> dict[str, Any]:
        return {"exitCode": self.exit_code, "orgs": [p.to_json() for p in self.plans]}


def _yaml_files(folder: Path) -> dict[str, bytes]:
    return {
        child.name: child.read_bytes()
        for child in sorted(folder.iterdir())
        if child.is_file() and is_config_file(child.name)
    }


def discover(root: Path) -> dict[str, dict[str, bytes]]:
    """Org name -> its YAML files."""
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a directory")
    files = _yaml_files(root)
    if files:
        return {root.resolve().name: files}
    return {
        child.name: _yaml_files(child)
        for child in sorted(root.iterdir())
        if child.is_dir() and not child.name.startswith(".") and _yaml_files(child)
    }


def _baseline_from_git(
    source: str, branch: str, path: str, names: list[str], single: bool
) -> dict[str, dict[str, bytes]]:
    with tempfile.TemporaryDirectory(prefix="userorg-plan-") as cache:
        git = GitSource(cache_dir=Path(cache), allow_local=True)
        head = git.head(source, branch)
        result: dict[str, dict[str, bytes]] = {}
        for name in names:
            folder = path if single else f"{path.rstrip('/')}/{name}"
            try:
                result[name] = git.read_folder(source, head.commit_id, folder)
            except SourceError as error:
                if error.code != "path_not_found":
                    raise
        return result


def _load(name: str, files: dict[str, bytes], max_file_bytes: int) -> DesiredOrg:
    try:
        return load_documents(files, max_file_bytes=max_file_bytes)
    except InvalidConfig as error:
        raise InvalidConfig(
            [
                ConfigError(
                    e.message,
                    file=f"{name}/{e.file}" if e.file else name,
                    line=e.line,
                    field=e.field,
                    code=e.code,
                )
                for e in error.errors
            ]
        ) from None


def plan_directory(
    directory: Path,
    *,
    against: str | None = None,
    branch: str = "main",
    path: str = ".",
    prune: bool = False,
    max_removal_fraction: float = 0.25,
    max_file_bytes: int = 1_048_576,
) -> OfflineResult:
    orgs = discover(directory)
    single = bool(_yaml_files(directory))
    baseline_files: dict[str, dict[str, bytes]] = {}
    problems: list[Plan] = []
    if against is not None:
        against_dir = Path(against)
        if (
            local_path(against) is not None
            and against_dir.is_dir()
            and not ((against_dir / ".git").exists() or (against_dir / "HEAD").exists())
        ):
            baseline_files = {
                name: files
                for name, files in discover(against_dir).items()
                if name in orgs or single
            }
            if single and baseline_files:
                baseline_files = {next(iter(orgs)): next(iter(baseline_files.values()))}
        else:
            try:
                baseline_files = _baseline_from_git(against, branch, path, list(orgs), single)
            except SourceError as error:
                plan = Plan(slug="(baseline)", errors=[ConfigError(error.message, code=error.code)])
                return OfflineResult([plan], EXIT_INVALID)
    plans: list[Plan] = []
    for name, files in orgs.items():
        try:
            desired = _load(name, files, max_file_bytes)
        except InvalidConfig as error:
            plans.append(Plan(slug=name, errors=error.errors))
            continue
        baseline: DesiredOrg | None = None
        if name in baseline_files:
            try:
                baseline = _load(name, baseline_files[name], max_file_bytes)
            except InvalidConfig:
                baseline = None  # the baseline itself is broken: plan against nothing
        actual = ActualOrg.from_desired(desired.slug or name, baseline)
        plans.append(
            compute_plan(desired, actual, prune=prune, max_removal_fraction=max_removal_fraction)
        )
    plans += problems
    if any(not plan.valid for plan in plans):
        code = EXIT_INVALID
    elif any(plan.has_changes for plan in plans):
        code = EXIT_CHANGES
    else:
        code = EXIT_NO_CHANGES
    return OfflineResult(plans, code)


def render(result: OfflineResult, *, as_json: bool = False) -> str:
    if as_json:
        return json.dumps(result.to_json(), indent=2, sort_keys=False, default=str)
    if not result.plans:
        return "no org folders (YAML files) found"
    return "\n\n".join(plan.render() for plan in result.plans)
