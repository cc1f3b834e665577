"""Elementary cycles of a small directed graph (forwarding between extensions).

Johnson's algorithm (D. B. Johnson, "Finding all the elementary circuits of a directed graph",
SIAM J. Comput. 4(1), 1975), written without recursion so a long forwarding chain cannot hit
Python's recursion limit. Its cost grows with the number of cycles found, not with the number of
paths, so a large acyclic forwarding tree stays cheap; ``limit`` bounds the output.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

__all__ = ["simple_cycles", "strongly_connected_components"]


def strongly_connected_components(graph: Mapping[str, Iterable[str]]) -> list[set[str]]:
    """The strongly connected components (Kosaraju, iterative)."""
    nodes: dict[str, list[str]] = {}
    for node, successors in graph.items():
        nodes.setdefault(node, [])
        for successor in successors:
            nodes[node].append(successor)
            nodes.setdefault(successor, [])
    order: list[str] = []
    seen: set[str] = set()
    for root in sorted(nodes):
        if root in seen:
            continue
        seen.add(root)
        stack = [(root, iter(nodes[root]))]
        while stack:
            node, successors = stack[-1]
            for successor in successors:
                if successor not in seen:
                    seen.add(successor)
                    stack.append((successor, iter(nodes[successor])))
                    break
            else:
                stack.pop()
                order.append(node)
    reverse: dict[str, list[str]] = {node: [] for node in nodes}
    for node, successors in nodes.items():
        for successor in successors:
            reverse[successor].append(node)
    components: list[set[str]] = []
    assigned: set[str] = set()
    for root in reversed(order):
        if root in assigned:
            continue
        component = {root}
        assigned.add(root)
        todo = [root]
        while todo:
            node = todo.pop()
            for predecessor in reverse[node]:
                if predecessor not in assigned:
                    assigned.add(predecessor)
                    component.add(predecessor)
                    todo.append(predecessor)
        components.append(component)
    return components


def _unblock(node: str, blocked: set[str], waiting: dict[str, set[str]]) -> None:
    todo = {node}
    while todo:
        current = todo.pop()
        if current in blocked:
            blocked.discard(current)
            todo.update(waiting.get(current, ()))
            waiting.pop(current, None)


def simple_cycles(
    graph: Mapping[str, Iterable[str]], limit: int | None = None
) -> tuple[list[tuple[str, ...]], bool]:
    """Every elementary cycle, each starting at its smallest node, in a deterministic order.

    Returns ``(cycles, complete)``; ``complete`` is False when ``limit`` cut the list short.
    """
    succ: dict[str, set[str]] = {}
    for node, successors in graph.items():
        succ.setdefault(node, set()).update(successors)
        for successor in successors:
            succ.setdefault(successor, set())
    cycles: list[tuple[str, ...]] = []
    for node in sorted(succ):
        if node in succ[node]:
            cycles.append((node,))
            succ[node].discard(node)

    def induced(members: set[str]) -> dict[str, set[str]]:
        return {n: succ[n] & members for n in members}

    pending = [c for c in strongly_connected_components(succ) if len(c) > 1]
    while pending:
        if limit is not None and len(cycles) >= limit:
            return cycles[:limit], False
        pending.sort(key=min, reverse=True)
        component = pending.pop()
        sub = induced(component)
        start = min(component)
        path = [start]
        blocked = {start}
        closed: set[str] = set()
        waiting: dict[str, set[str]] = {}
        stack = [(start, sorted(sub[start], reverse=True))]
        while stack:
            node, successors = stack[-1]
            if successors:
                successor = successors.pop()
                if successor == start:
                    cycles.append(tuple(path))
                    closed.update(path)
                elif successor not in blocked:
                    path.append(successor)
                    stack.append((successor, sorted(sub[successor], reverse=True)))
                    closed.discard(successor)
                    blocked.add(successor)
                    continue
            if not successors:
                if node in closed:
                    _unblock(node, blocked, waiting)
                else:
                    for successor in sub[node]:
                        waiting.setdefault(successor, set()).add(node)
                stack.pop()
                path.pop()
        rest = component - {start}
        pending.extend(c for c in strongly_connected_components(induced(rest)) if len(c) > 1)
    if limit is not None and len(cycles) > limit:
        return cycles[:limit], False
    return cycles, True
