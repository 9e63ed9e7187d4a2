"""YAML read with a bound on what aliases may expand to and no duplicate keys: what finetuner
uses for every YAML file it did not just write itself (config files, a run's ``source.yml``,
an artifact's metadata)."""

from __future__ import annotations

from typing import Any

import yaml

__all__ = ["ALIAS_NODE_BUDGET", "BoundedLoader", "RefusedYAML", "load_bounded"]

ALIAS_NODE_BUDGET = 10_000
"""How many nodes aliases may add to a document when expanded (beyond the nodes written)."""

_MERGE_TAG = "tag:yaml.org,2002:merge"


def _expanded_sizes(root: yaml.Node) -> tuple[int, int]:
    """The number of distinct nodes of the graph under *root*, and the number of nodes of the
    tree it expands to (aliases copied out); shared nodes are measured once, so this is
    cheap even where the expansion is astronomically large."""
    sizes: dict[int, int] = {}
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        if id(node) in sizes:
            continue
        children = _children(node)
        if children_done or not children:
            sizes[id(node)] = 1 + sum(sizes.get(id(child), 0) for child in children)
            continue
        stack.append((node, True))
        stack.extend((child, False) for child in children if id(child) not in sizes)
    return len(sizes), sizes[id(root)]


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    return []


class RefusedYAML(yaml.MarkedYAMLError):
    """Valid YAML that finetuner refuses to read (aliases expanding too far, a duplicate key)."""


class BoundedLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that bounds alias expansion and refuses duplicate keys."""

    def construct_document(self, node: yaml.Node) -> Any:
        distinct, expanded = _expanded_sizes(node)
        if expanded - distinct > ALIAS_NODE_BUDGET:
            raise RefusedYAML(
                None,
                None,
                f"its aliases expand to more than {ALIAS_NODE_BUDGET} nodes (about "
                f"{expanded:.3g}); finetuner refuses such files. Write the values out instead "
                "of nesting aliases",
                node.start_mark,
            )
        return super().construct_document(node)

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> Any:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == _MERGE_TAG or not isinstance(key_node, yaml.ScalarNode):
                continue
            key = self.construct_object(key_node)
            line = key_node.start_mark.line + 1
            if key in seen:
                raise RefusedYAML(
                    None,
                    None,
                    f"the key '{key}' is given twice, on line {seen[key]} and line {line}; "
                    "keep one",
                    key_node.start_mark,
                )
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


def load_bounded(text: str | bytes) -> tuple[Any, yaml.Node | None]:
    """The value of the YAML document *text* and its node graph (``None`` when empty);
    raises ``yaml.YAMLError`` (:class:`RefusedYAML` for what is refused)."""
    loader = BoundedLoader(text)
    try:
        node = loader.get_single_node()
        return (loader.construct_document(node) if node is not None else None), node
    finally:
        loader.dispose()
