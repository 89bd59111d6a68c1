"""A configuration file's YAML, read with bounds so that no file can hang, crash or flood the
process: its size, its nesting, its aliases once expanded, the length of its numbers, and
duplicate keys (which plain YAML takes silently, the last one winning) are all refused with
the line at fault.

Aliases are expanded, not refused: `<<: *defaults` shared between databases is ordinary YAML.
What is bounded is the size of the document they expand to (a "billion laughs" file is a few
aliases that expand to 10^9 nodes), counted without expanding it; an alias inside its own
anchor (a document that contains itself) is refused.
"""

from __future__ import annotations

from typing import Any

import yaml
from yaml.constructor import ConstructorError
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

MAX_FILE_BYTES = 1024 * 1024
MAX_DEPTH = 32  # mappings and lists inside each other (the settings need 5)
MAX_NODES = 100_000  # keys, values and items, every alias expanded
MAX_NUMBER_LENGTH = 100  # characters of an integer or a float


class YamlRefused(yaml.MarkedYAMLError):
    """A well-formed document beyond a bound, or with a duplicate key."""


def load(text: str) -> Any:
    """The data of the one YAML document in `text` (None when empty); yaml.YAMLError when it
    is not YAML or breaks a bound (a `yaml.MarkedYAMLError` names the line)."""
    loader = _BoundedLoader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


class _BoundedLoader(yaml.SafeLoader):
    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        # The composer recurses once per level: bounded here, before Python's own limit.
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]
                raise YamlRefused(None, None, f"nested deeper than {MAX_DEPTH} levels", mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def compose_document(self) -> Node | None:
        node: Node | None = super().compose_document()
        if node is not None:
            _check_size(node)
        return node

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # `<<`: its keys may be overridden, that is what it is for
            key = self.construct_object(key_node, deep=True)
            try:
                repeated = key in seen
                seen.add(key)
            except TypeError:
                raise ConstructorError(
                    None, None, "a key must be a single value", key_node.start_mark
                ) from None
            if repeated:
                raise YamlRefused(None, None, f"duplicate key {key!r}", key_node.start_mark)
        return super().construct_mapping(node, deep=deep)

    def construct_yaml_int(self, node: ScalarNode) -> int:
        _check_number(node)
        return super().construct_yaml_int(node)

    def construct_yaml_float(self, node: ScalarNode) -> float:
        _check_number(node)
        return super().construct_yaml_float(node)


_BoundedLoader.add_constructor("tag:yaml.org,2002:int", _BoundedLoader.construct_yaml_int)
_BoundedLoader.add_constructor("tag:yaml.org,2002:float", _BoundedLoader.construct_yaml_float)


def _check_number(node: ScalarNode) -> None:
    if len(node.value) > MAX_NUMBER_LENGTH:
        raise YamlRefused(
            None, None, f"a number longer than {MAX_NUMBER_LENGTH} characters", node.start_mark
        )


def _check_size(root: Node) -> None:
    """Refuse a document of more than MAX_NODES nodes once its aliases are expanded, or one
    that contains itself, counting each shared node once (its size is remembered)."""
    sizes: dict[int, int] = {}
    inside: set[int] = set()
    # An explicit stack: a chain of aliases may be longer than Python's recursion limit.
    stack: list[tuple[Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        if id(node) in sizes:
            continue
        children = _children(node)
        if children_done:
            inside.discard(id(node))
            size = 1 + sum(sizes[id(child)] for child in children)
            if size > MAX_NODES:
                raise YamlRefused(
                    None,
                    None,
                    f"more than {MAX_NODES} values once its aliases are expanded",
                    node.start_mark,
                )
            sizes[id(node)] = size
            continue
        if id(node) in inside:
            raise YamlRefused(None, None, "an alias inside its own anchor", node.start_mark)
        inside.add(id(node))
        stack.append((node, True))
        stack.extend((child, False) for child in children if id(child) not in sizes)


def _children(node: Node) -> list[Node]:
    if isinstance(node, SequenceNode):
        return list(node.value)
    if isinstance(node, MappingNode):
        return [part for pair in node.value for part in pair]
    return []
