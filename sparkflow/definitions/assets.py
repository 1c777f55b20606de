"""Assets (Airflow 3; datasets in Airflow 2): data a task produces (``outlets=[Asset(...)]``) and DAGs scheduled
on it (``schedule=[a, b]``, ``a & (b | c)``, ``AssetOrTimeSchedule``). When a producing task succeeds an asset
event is recorded; a DAG scheduled on assets gets an ``asset_triggered`` run once its condition holds over the
events queued for it.

``AssetAlias("x")`` names assets decided at run time: a task with ``outlets=[AssetAlias("x")]`` adds events
(``outlet_events[AssetAlias("x")].add(Asset(...))``), which records the alias -> asset link; a DAG scheduled on
the alias is scheduled on the assets it has resolved to (Airflow 2.10 / 3 semantics).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator, Mapping
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

    def iter_aliases(self) -> Iterator[AssetAlias]:
        return iter(())

    def evaluate(self, ready: set[str], resolved: Mapping[str, Collection[str]] | None = None) -> bool:
        """Whether the condition holds when the assets with these URIs have a queued event; ``resolved``: the
        URIs each alias (by name) has resolved to so far."""
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

    def evaluate(self, ready: set[str], resolved: Mapping[str, Collection[str]] | None = None) -> bool:
        return self.uri in ready

    def words(self) -> str:
        return self.uri


class Dataset(Asset):
    """Airflow 2's name: ``Dataset(uri, extra=...)``."""


class AssetAlias(BaseAsset):
    """A named set of assets decided at run time (``AssetAlias(name, group="")``): what the tasks that have it as
    an outlet added through ``outlet_events[alias].add(asset)``. A condition on it holds when any asset it has
    resolved to has a queued event."""

    def __init__(self, name: str, group: str = "") -> None:
        if not isinstance(name, str) or not name.strip() or len(name) > 1500:
            raise DagDefinitionError(f"asset alias name {name!r} is invalid; give a non-empty name such as "
                                     "'example-alias'")
        self.name = name
        self.group = group

    def __eq__(self, other: object) -> bool:
        return isinstance(other, AssetAlias) and other.name == self.name

    def __hash__(self) -> int:
        return hash(("alias", self.name))

    def __repr__(self) -> str:
        return f"AssetAlias({self.name!r})"

    def iter_assets(self) -> Iterator[Asset]:
        return iter(())

    def iter_aliases(self) -> Iterator[AssetAlias]:
        yield self

    def evaluate(self, ready: set[str], resolved: Mapping[str, Collection[str]] | None = None) -> bool:
        return any(uri in ready for uri in (resolved or {}).get(self.name, ()))

    def words(self) -> str:
        return f"alias {self.name}"


class _Combined(BaseAsset):
    joiner = ""

    def __init__(self, *objects: BaseAsset) -> None:
        self.objects = [_check(o) for o in objects]

    def iter_assets(self) -> Iterator[Asset]:
        for obj in self.objects:
            yield from obj.iter_assets()

    def iter_aliases(self) -> Iterator[AssetAlias]:
        for obj in self.objects:
            yield from obj.iter_aliases()

    def words(self) -> str:
        return f" {self.joiner} ".join(
            f"({o.words()})" if isinstance(o, _Combined) else o.words() for o in self.objects)


class AssetAll(_Combined):
    joiner = "and"

    def evaluate(self, ready: set[str], resolved: Mapping[str, Collection[str]] | None = None) -> bool:
        return all(o.evaluate(ready, resolved) for o in self.objects)


class AssetAny(_Combined):
    joiner = "or"

    def evaluate(self, ready: set[str], resolved: Mapping[str, Collection[str]] | None = None) -> bool:
        return any(o.evaluate(ready, resolved) for o in self.objects)


DatasetAll, DatasetAny = AssetAll, AssetAny


class AssetOrTimeSchedule:
    """Runs on its timetable and also whenever its assets are updated (Airflow's AssetOrTimeSchedule)."""

    def __init__(self, *, timetable: Any, assets: Any = None, datasets: Any = None) -> None:
        self.timetable = timetable
        self.assets = as_condition(assets if assets is not None else datasets)


DatasetOrTimeSchedule = AssetOrTimeSchedule


class OutletEventAccessor:
    """``outlet_events[asset_or_alias]`` in a task: the ``extra`` of the event its success records for an asset,
    or, for an alias, the assets added through it (``.add(asset, extra=...)``)."""

    def __init__(self, key: Asset | AssetAlias) -> None:
        self.key = key
        self.extra: dict[str, Any] = {}
        self.asset_alias_events: list[tuple[Asset, dict[str, Any]]] = []

    def add(self, asset: Asset, extra: dict[str, Any] | None = None) -> None:
        if not isinstance(self.key, AssetAlias):
            raise DagDefinitionError(f"outlet_events[{self.key!r}].add(): only an AssetAlias takes added assets; "
                                     "set .extra on an asset's outlet event instead")
        if not isinstance(asset, Asset):
            raise DagDefinitionError(f"outlet_events[{self.key!r}].add({asset!r}): give an Asset(...)")
        self.asset_alias_events.append((asset, dict(extra or {})))


class OutletEventAccessors:
    """The task context's ``outlet_events`` (Airflow's name): one accessor per asset or alias, made on first use."""

    def __init__(self) -> None:
        self._accessors: dict[Asset | AssetAlias, OutletEventAccessor] = {}

    def __getitem__(self, key: Asset | AssetAlias) -> OutletEventAccessor:
        if not isinstance(key, (Asset, AssetAlias)):
            raise DagDefinitionError(f"outlet_events[{key!r}]: the key must be an Asset or an AssetAlias")
        if key not in self._accessors:
            self._accessors[key] = OutletEventAccessor(key)
        return self._accessors[key]

    def get(self, key: Asset | AssetAlias) -> OutletEventAccessor | None:
        return self._accessors.get(key)


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
        return {"alias": condition.name, "group": condition.group}
    assert isinstance(condition, _Combined)
    return {"all" if isinstance(condition, AssetAll) else "any": [condition_to_json(o) for o in condition.objects]}


def condition_from_json(data: Any) -> BaseAsset:
    if "uri" in data:
        return Asset(data["uri"])
    if "alias" in data:
        return AssetAlias(data["alias"], data.get("group") or "")
    kind = AssetAll if "all" in data else AssetAny
    return kind(*(condition_from_json(item) for item in data.get("all") or data.get("any") or []))


def outlet_assets(outlets: Iterable[Any] | None, where: str) -> list[Asset | AssetAlias]:
    assets: list[Asset | AssetAlias] = []
    for outlet in outlets or []:
        if not isinstance(outlet, (Asset, AssetAlias)):
            raise DagDefinitionError(f"{where}: outlets must be Asset/Dataset or AssetAlias objects, got {outlet!r}")
        assets.append(outlet)
    return assets


__all__ = ["Asset", "AssetAlias", "AssetAll", "AssetAny", "AssetOrTimeSchedule", "BaseAsset", "Dataset",
           "DatasetAll", "DatasetAny", "DatasetOrTimeSchedule", "OutletEventAccessor", "OutletEventAccessors",
           "as_condition", "condition_from_json", "condition_to_json", "is_asset_schedule", "outlet_assets"]
