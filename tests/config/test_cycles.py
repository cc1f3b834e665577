"""Johnson's elementary-cycle enumeration used for forwarding cycles."""

from __future__ import annotations

import itertools
import time

from hypothesis import given, settings
from hypothesis import strategies as st

from pbx.config.cycles import simple_cycles, strongly_connected_components


def brute_force_cycles(graph: dict[str, list[str]]) -> set[tuple[str, ...]]:
    """Every elementary cycle, rotated to start at its smallest node (tiny graphs only)."""
    nodes = sorted(set(graph) | {t for ts in graph.values() for t in ts})
    found: set[tuple[str, ...]] = set()
    for size in range(1, len(nodes) + 1):
        for combo in itertools.permutations(nodes, size):
            if combo[0] != min(combo):
                continue
            ring = (*combo, combo[0])
            if all(b in graph.get(a, []) for a, b in itertools.pairwise(ring)):
                found.add(combo)
    return found


graphs = st.dictionaries(
    st.sampled_from("abcdef"), st.lists(st.sampled_from("abcdef"), max_size=3), max_size=6
)


@given(graphs)
@settings(max_examples=300, deadline=None)
def test_simple_cycles_match_brute_force(graph: dict[str, list[str]]) -> None:
    cycles, complete = simple_cycles(graph)
    assert complete
    assert len(cycles) == len(set(cycles))
    assert set(cycles) == brute_force_cycles(graph)
    assert all(cycle[0] == min(cycle) for cycle in cycles)


def test_two_node_and_self_loop() -> None:
    cycles, complete = simple_cycles({"1001": ["1002"], "1002": ["1001", "1002"]})
    assert complete
    assert cycles == [("1002",), ("1001", "1002")]


def test_acyclic_graph_with_exponentially_many_paths_is_fast() -> None:
    # Each extension forwards to the next two: ~1.6^n paths, no cycle.
    graph = {f"{i:04d}": [f"{i + 1:04d}", f"{i + 2:04d}"] for i in range(2000)}
    began = time.perf_counter()
    assert simple_cycles(graph) == ([], True)
    assert time.perf_counter() - began < 2


def test_limit_cuts_the_list_and_says_so() -> None:
    nodes = [f"{i:04d}" for i in range(8)]
    complete_graph = {a: [b for b in nodes if b != a] for a in nodes}
    cycles, complete = simple_cycles(complete_graph, limit=10)
    assert len(cycles) == 10
    assert not complete


def test_long_cycle_does_not_recurse() -> None:
    nodes = [f"{i:04d}" for i in range(5000)]
    ring = {a: [b] for a, b in zip(nodes, nodes[1:] + nodes[:1], strict=True)}
    cycles, complete = simple_cycles(ring)
    assert complete
    assert cycles == [tuple(nodes)]


def test_strongly_connected_components() -> None:
    components = strongly_connected_components({"a": ["b"], "b": ["a", "c"], "c": []})
    assert sorted(map(sorted, components)) == [["a", "b"], ["c"]]
