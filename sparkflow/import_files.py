"""Reading the files users import (connections, variables): UTF-8 text, JSON or YAML, strictly.

Strict because a silently wrong import is worse than a refused one: a key given twice is an error naming it
(json and PyYAML would keep the last one), and a YAML document whose aliases expand to more than
MAX_YAML_NODES nodes (the "billion laughs") is refused before anything walks it.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

from sparkflow.exceptions import UserError

MAX_YAML_NODES = 100_000  # far beyond any real connections file, far below what exhausts memory


def read_text(path: Path, what: str, error: type[UserError] = UserError) -> str:
    """The text of ``path`` (``what``: "connections file", say), or ``error`` naming why it cannot be had."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise error(f"{what} {path} cannot be read: {exc.strerror}") from None
    try:
        return data.decode("utf-8-sig")  # a byte-order mark, as some editors write, is fine
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise error(f"{what} {path} is not UTF-8 text (byte 0x{data[exc.start]:02x} on line {line}); "
                        "save it as UTF-8") from None


def load_json(text: str) -> Any:
    """``json.loads`` that refuses a key given twice in one object (ValueError naming it)."""
    return json.loads(text, object_pairs_hook=_unique_pairs)


def _unique_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise DuplicateKey(key)
        result[key] = value
    return result


class DuplicateKey(ValueError):
    def __init__(self, key: str, line: int | None = None) -> None:
        where = f" (line {line})" if line is not None else ""
        super().__init__(f"key '{key}' appears more than once{where}; keep one")
        self.key = key


class TooManyNodes(ValueError):
    def __init__(self, count: int) -> None:
        super().__init__(f"its aliases expand to more than {MAX_YAML_NODES} nodes ({count} so far); "
                         "write the values out or use fewer nested aliases")


def load_yaml(text: str) -> Any:
    """``yaml.safe_load`` that refuses a key given twice in one mapping and an alias expansion beyond
    MAX_YAML_NODES nodes (ValueError, or yaml.YAMLError for a malformed document)."""
    import yaml  # here, not at the top: only imports need it (~30 ms of every CLI start otherwise)

    return yaml.load(text, Loader=_strict_loader())  # noqa: S506 - a SafeLoader subclass


@cache
def _strict_loader() -> type:
    import yaml

    class StrictLoader(yaml.SafeLoader):
        def construct_document(self, node: yaml.Node) -> Any:
            _check_nodes(node)
            return super().construct_document(node)

    return StrictLoader


def _check_nodes(root: Any) -> None:
    """Count the nodes of the document as its aliases expand it (each shared node counted once per use,
    memoised so the count itself stays cheap), and look for keys given twice in a mapping."""
    import yaml

    sizes: dict[int, int] = {}
    visiting: set[int] = set()  # on the path from the root to the node at hand: an alias back to one is a cycle
    stack: list[tuple[Any, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        if id(node) in sizes:
            continue
        if isinstance(node, yaml.ScalarNode):
            sizes[id(node)] = 1
            continue
        children = ([n for pair in node.value for n in pair] if isinstance(node, yaml.MappingNode)
                    else list(node.value))
        if not children_done:
            if isinstance(node, yaml.MappingNode):
                _check_keys(node)
            visiting.add(id(node))
            stack.append((node, True))
            for child in children:
                if id(child) in visiting:
                    raise ValueError("an alias refers to a node that contains it (a recursive structure); "
                                     "write the values out")
                if id(child) not in sizes:
                    stack.append((child, False))
            continue
        visiting.discard(id(node))
        size = 1 + sum(sizes[id(child)] for child in children)
        if size > MAX_YAML_NODES:
            raise TooManyNodes(size)
        sizes[id(node)] = size


def _check_keys(node: Any) -> None:
    import yaml

    seen: set[tuple[str, str]] = set()
    for key, _ in node.value:
        if not isinstance(key, yaml.ScalarNode) or key.tag == "tag:yaml.org,2002:merge":
            continue
        if (key.tag, key.value) in seen:
            raise DuplicateKey(key.value, key.start_mark.line + 1)
        seen.add((key.tag, key.value))
