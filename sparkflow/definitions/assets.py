"""Assets (Airflow 3; datasets in Airflow 2): data a task produces (``outlets=[Asset(...)]``) and DAGs scheduled
on it (``schedule=[a, b]``, ``a & (b | c)``, ``AssetOrTimeSchedule``). When a producing task succeeds an asset
event is recorded; a DAG scheduled on assets gets an ``asset_triggered`` run once its condition holds over the
events queued for it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from sparkflow.exceptions import DagDefinitionError


class BaseAsset:
    """What can be scheduled on: an asset, or ``&`` / ``|`` of them."""

    def __and__(self, other: BaseAsset) -> AssetAll:
        return AssetAll(self, _check(other))

    def __or__(self, other: BaseAsset) -> AssetAny:
        return AssetAny(self, _check(other))

    def iter_assets(self) -> Iterator[Asset]:
        raise NotImplementedError

    def evaluate(self, ready: set[str]) -> bool:
        """Whether the condition holds when the assets with these URIs have a queued event."""
        raise NotImplementedError

    def words(self) -> str:
        raise NotImplementedError


@dataclass(frozen=True, eq=False)
class Asset(BaseAsset):
    uri: str
    name: str | None = None
    group: str = "asset"
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.uri, str) or not self.uri.strip() or len(self.uri) > 3000:
            raise DagDefinitionError(f"asset uri {self.uri!r} is invalid; give a non-empty URI such as "
                                     "'s3://bucket/trips/' or 'file:///data/trips.parquet'")
        if self.name is None:
            object.__setattr__(self, "name", self.uri)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Asset) and other.uri == self.uri

    def __hash__(self) -> int:
        return hash(self.uri)

    def iter_assets(self) -> Iterator[Asset]:
        yield self

    def evaluate(self, ready: set[str]) -> bool:
        return self.uri in ready

    def words(self) -> str:
        return self.uri


class Dataset(Asset):
    """Airflow 2's name: ``Dataset(uri, extra=...)``."""


class AssetAlias(BaseAsset):
    """A named alias; sparkflow resolves an alias to nothing yet, so a schedule on it never fires (a warning)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def iter_assets(self) -> Iterator[Asset]:
        return iter(())

    def evaluate(self, ready: set[str]) -> bool:
        return False

    def words(self) -> str:
        return f"alias {self.name}"


class _Combined(BaseAsset):
    joiner = ""

    def __init__(self, *objects: BaseAsset) -> None:
        self.objects = [_check(o) for o in objects]

    def iter_assets(self) -> Iterator[Asset]:
        for obj in self.objects:
            yield from obj.iter_assets()

    def words(self) -> str:
        return f" {self.joiner} ".join(o.words() if isinstance(o, Asset) else f"({o.words()})" for o in self.objects)


class AssetAll(_Combined):
    joiner = "and"

    def evaluate(self, ready: set[str]) -> bool:
        return all(o.evaluate(ready) for o in self.objects)


class AssetAny(_Combined):
    joiner = "or"

    def evaluate(self, ready: set[str]) -> bool:
        return any(o.evaluate(ready) for o in self.objects)


DatasetAll, DatasetAny = AssetAll, AssetAny


class AssetOrTimeSchedule:
    """Runs on its timetable and also whenever its assets are updated (Airflow's AssetOrTimeSchedule)."""

    def __init__(self, *, timetable: Any, assets: Any = None, datasets: Any = None) -> None:
        self.timetable = timetable
        self.assets = as_condition(assets if assets is not None else datasets)


DatasetOrTimeSchedule = AssetOrTimeSchedule


def _check(value: Any) -> BaseAsset:
    if not isinstance(value, BaseAsset):
        raise DagDefinitionError(f"cannot combine {value!r} with an asset; use Asset(...) objects with & and |")
    return value


def as_condition(value: Any) -> BaseAsset:
    """A DAG's asset schedule as one condition: a list means all of them (Airflow's rule)."""
    if isinstance(value, BaseAsset):
        return value
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, BaseAsset) for v in value):
        return AssetAll(*value)
    raise DagDefinitionError(f"schedule {value!r} is not an asset condition; give a list of assets or assets "
                             "combined with & and |")


def is_asset_schedule(value: Any) -> bool:
    return isinstance(value, (BaseAsset, AssetOrTimeSchedule)) or (
        isinstance(value, (list, tuple)) and bool(value) and all(isinstance(v, BaseAsset) for v in value))


def condition_to_json(condition: BaseAsset) -> Any:
    if isinstance(condition, Asset):
        return {"uri": condition.uri}
    if isinstance(condition, AssetAlias):
        return {"alias": condition.name}
    assert isinstance(condition, _Combined)
    return {"all" if isinstance(condition, AssetAll) else "any": [condition_to_json(o) for o in condition.objects]}


def condition_from_json(data: Any) -> BaseAsset:
    if "uri" in data:
        return Asset(data["uri"])
    if "alias" in data:
        return AssetAlias(data["alias"])
    kind = AssetAll if "all" in data else AssetAny
    return kind(*(condition_from_json(item) for item in data.get("all") or data.get("any") or []))


def outlet_assets(outlets: Iterable[Any] | None, where: str) -> list[Asset]:
    assets = []
    for outlet in outlets or []:
        if not isinstance(outlet, Asset):
            raise DagDefinitionError(f"{where}: outlets must be Asset/Dataset objects, got {outlet!r}")
        assets.append(outlet)
    return assets


__all__ = ["Asset", "AssetAlias", "AssetAll", "AssetAny", "AssetOrTimeSchedule", "BaseAsset", "Dataset",
           "DatasetAll", "DatasetAny", "DatasetOrTimeSchedule", "as_condition", "condition_from_json",
           "condition_to_json", "is_asset_schedule", "outlet_assets"]
