"""The kernel fast path's pure half: the flow table's batches, counters and nft's listings."""

from __future__ import annotations

import json

from pbx.media.kernelflows import (
    COPY_MARK,
    GET_CHUNK,
    MARK,
    Flow,
    FlowTable,
    parse_counters,
    parse_element_counters,
    stale_tables,
    table_script,
)
from pbx.media.latch import Channel, Party, Side, SourceVerdict

A_TO_B = Flow(("10.0.0.2", 4000), 20000, 20002, ("10.0.0.3", 5000), "192.0.2.1")
B_TO_A = Flow(("10.0.0.3", 5000), 20002, 20000, ("10.0.0.2", 4000), "192.0.2.1")


def listing(*elements: tuple[str, int, int, int]) -> str:
    """What ``nft -j list set ip T flows`` prints."""
    return json.dumps(
        {
            "nftables": [
                {"metainfo": {"version": "1.0.6"}},
                {
                    "set": {
                        "family": "ip",
                        "name": "flows",
                        "elem": [
                            {
                                "elem": {
                                    "val": {"concat": [address, sport, port]},
                                    "counter": {"packets": packets, "bytes": packets * 172},
                                }
                            }
                            for address, sport, port, packets in elements
                        ],
                    }
                },
            ]
        }
    )


def test_the_table_matches_flows_before_tracking_and_rewrites_their_source_after_routing() -> None:
    script = table_script("pbx_relay_42", 40000)
    # Replaces an older table of the same name in one transaction.
    assert script.startswith("add table ip pbx_relay_42\ndelete table ip pbx_relay_42\n")
    assert "type filter hook prerouting priority raw" in script
    assert "@flows notrack meta mark set 0x50420000" in script
    assert script.count(f"meta mark 0x{MARK:08x} ip saddr set udp sport map @saddr_of") == 2
    assert "hook input" in script
    assert "hook postrouting" in script
    # The destination port is rewritten last: the maps are keyed by the original one.
    rule = script[script.index("@flows") : script.index("chain input")]
    assert rule.index("ip daddr set") < rule.index("udp sport set") < rule.index("udp dport set")


def test_a_batch_adds_what_is_wanted_and_removes_what_is_not() -> None:
    table = FlowTable("t")
    table.want(20000, A_TO_B)
    table.want(20002, B_TO_A)
    assert table.pending
    removed, added = table.changes()
    assert removed == []
    assert added == [A_TO_B, B_TO_A]
    script = table.script(removed, added)
    assert "add element ip t flows { 10.0.0.2 . 4000 . 20000 }\n" in script
    assert "add element ip t daddr_of { 20000 : 10.0.0.3 }\n" in script
    assert "add element ip t dport_of { 20000 : 5000 }\n" in script
    assert "add element ip t sport_of { 20000 : 20002 }\n" in script
    assert "add element ip t saddr_of { 20002 : 192.0.2.1 }\n" in script
    table.applied(removed, added)
    assert table.changes() == ([], [])
    # A party that moved: its old flow goes and the new one comes, in one batch.
    moved = Flow(("10.0.0.9", 4444), 20000, 20002, ("10.0.0.3", 5000), "192.0.2.1")
    table.want(20000, moved)
    table.want(20002, None)
    removed, added = table.changes()
    assert removed == [A_TO_B, B_TO_A]
    assert added == [moved]
    script = table.script(removed, added)
    assert script.index("delete element ip t flows { 10.0.0.2 . 4000 . 20000 }") < script.index(
        "add element ip t flows { 10.0.0.9 . 4444 . 20000 }"
    )
    assert "delete element ip t saddr_of { 20000 }\n" in script  # B_TO_A's out port
    table.applied(removed, added)
    assert table.installed == {20000: moved}


def test_a_copied_flow_is_duplicated_to_our_port_and_its_copies_are_told_apart() -> None:
    script = table_script("pbx_relay_42", 40000)
    chain = script[script.index("chain prerouting") : script.index("chain input")]
    copy = f"0x{COPY_MARK:08x}"
    # A copy coming back through loopback first: sent on to the copies port (40000) from our
    # port (which call), untouched by the forwarding rule below (and not copied again);
    # anything else sent to the copies port is dropped.
    back = chain.index(f"meta mark {copy} udp sport set udp dport udp dport set 40000 accept")
    assert back < chain.index("udp dport 40000 drop") < chain.index(f"@copies meta mark set {copy}")
    # Duplicated before the forwarding rule rewrites the packet: the copy goes to our port.
    assert chain.index("dup to ip daddr") < chain.index("@flows notrack")
    recorded = Flow(("10.0.0.2", 4000), 20000, 20002, ("10.0.0.3", 5000), "192.0.2.1", True)
    table = FlowTable("t")
    table.want(20000, recorded)
    script = table.script(*table.changes())
    assert "add element ip t copies { 10.0.0.2 . 4000 . 20000 }\n" in script
    assert "add element ip t flows { 10.0.0.2 . 4000 . 20000 }\n" in script
    table.applied(*table.changes())
    # The recording stops: the same flow without its copies, in one batch.
    table.want(20000, A_TO_B)
    removed, added = table.changes()
    assert (removed, added) == ([recorded], [A_TO_B])
    script = table.script(removed, added)
    assert "delete element ip t copies { 10.0.0.2 . 4000 . 20000 }\n" in script
    assert "copies" not in script[script.index("add element") :]


def test_a_failed_batch_leaves_the_table_to_be_filled_again() -> None:
    table = FlowTable("t")
    table.want(20000, A_TO_B)
    table.applied(*table.changes())
    table.lost()
    assert table.pending
    assert table.changes() == ([], [A_TO_B])
    assert table.flush_script().count("flush ") == 6  # every set and map, copies too


def test_counters_give_what_each_flow_forwarded_since_the_last_listing_and_the_silent_ones() -> (
    None
):
    table = FlowTable("t")
    table.want(20000, A_TO_B)
    table.want(20002, B_TO_A)
    table.applied(*table.changes())
    moved, silent = table.count(parse_counters(listing(("10.0.0.2", 4000, 20000, 50))))
    assert moved == {20000: 50}
    assert silent == []
    listed = listing(("10.0.0.2", 4000, 20000, 120), ("10.0.0.3", 5000, 20002, 0))
    moved, silent = table.count(parse_counters(listed))
    # B_TO_A's first listing shows nothing: it may just have been added, not silent yet.
    assert moved == {20000: 70, 20002: 0}
    assert silent == []
    listed = listing(("10.0.0.2", 4000, 20000, 120), ("10.0.0.3", 5000, 20002, 0))
    assert table.count(parse_counters(listed)) == ({20000: 0, 20002: 0}, [20000, 20002])
    # A listing of another source on the same port (a flow replaced meanwhile) is not ours.
    assert table.count(parse_counters(listing(("10.0.0.7", 1, 20000, 999)))) == ({}, [])


def test_a_flow_added_again_counts_from_zero() -> None:
    table = FlowTable("t")
    table.want(20000, A_TO_B)
    table.applied(*table.changes())
    table.count(parse_counters(listing(("10.0.0.2", 4000, 20000, 500))))
    table.want(20000, None)
    table.applied(*table.changes())
    table.want(20000, A_TO_B)
    table.applied(*table.changes())
    moved, _ = table.count(parse_counters(listing(("10.0.0.2", 4000, 20000, 30))))
    assert moved == {20000: 30}


def test_listings_nft_may_print() -> None:
    assert parse_counters("") == {}
    assert parse_counters("not json") == {}
    assert parse_counters(json.dumps({"nftables": [{"set": {"name": "flows"}}]})) == {}
    text = (
        "table ip t {\n\tset flows {\n\t\ttype ipv4_addr . inet_service . inet_service\n"
        "\t\telements = { 127.0.0.2 . 40000 . 41000 counter packets 7 bytes 1204,\n"
        "\t\t\t     127.0.0.2 . 40002 . 41002 counter packets 0 bytes 0 }\n\t}\n}\n"
    )
    assert parse_element_counters(text) == {
        ("127.0.0.2", 40000, 41000): 7,
        ("127.0.0.2", 40002, 41002): 0,
    }


def test_a_batch_prints_the_counters_of_the_flows_it_removes_first_a_few_keys_at_a_time() -> None:
    table = FlowTable("t")
    flows = [
        Flow(("10.0.0.2", 4000 + n), 20000 + 2 * n, 30000, ("10.0.0.3", 5000), "192.0.2.1")
        for n in range(GET_CHUNK + 1)
    ]
    for flow in flows:
        table.want(flow.port, flow)
    table.applied(*table.changes())
    for flow in flows:
        table.want(flow.port, None)
    removed, added = table.changes()
    lines = table.script(removed, added).splitlines()
    gets = [line for line in lines if line.startswith("get element ip t flows")]
    assert len(gets) == 2  # nft 1.0.6 crashes on a get of 200 keys
    assert gets[0].count(" . ") == 2 * GET_CHUNK
    assert gets[1] == "get element ip t flows { 10.0.0.2 . 4064 . 20128 }"
    first_removal = lines.index("delete element ip t flows { 10.0.0.2 . 4000 . 20000 }")
    assert lines.index(gets[-1]) < first_removal


def test_counters_read_before_a_removal_never_call_a_flow_silent() -> None:
    table = FlowTable("t")
    table.want(20000, A_TO_B)
    table.want(20002, B_TO_A)
    table.applied(*table.changes())
    both = listing(("10.0.0.2", 4000, 20000, 10), ("10.0.0.3", 5000, 20002, 10))
    table.count(parse_counters(both))
    # A removal's read shows B_TO_A too, unchanged just after the listing: not silent.
    assert table.count(parse_counters(both), silence=False) == ({20000: 0, 20002: 0}, [])
    # The next periodic listing judges it from the listing before.
    assert table.count(parse_counters(both)) == ({20000: 0, 20002: 0}, [20000, 20002])


def test_only_the_tables_of_processes_that_are_gone_are_stale() -> None:
    tables = json.dumps(
        {
            "nftables": [
                {"metainfo": {}},
                {"table": {"family": "ip", "name": "pbx_relay_100"}},
                {"table": {"family": "ip", "name": "pbx_relay_200"}},
                {"table": {"family": "inet", "name": "pbx_relay_300"}},
                {"table": {"family": "ip", "name": "filter"}},
                {"table": {"family": "ip", "name": "pbx_relay_test"}},
            ]
        }
    )
    assert stale_tables(tables, alive={200}) == ["pbx_relay_100"]


def rtp(seq: int) -> bytes:
    return bytes([0x80, 0, seq >> 8, seq & 0xFF]) + b"\x00" * 8


def test_the_loss_count_covers_what_the_relay_read_around_a_kernel_phase() -> None:
    channel = Channel(0.0)
    channel.start_stream(rtp(100))
    channel.received = 1
    for seq in (101, 103):  # 102 is lost
        channel.latest = rtp(seq)
        channel.received += 1
    assert channel.lost() == 1
    channel.hand_to_kernel()
    assert channel.offloaded
    assert channel.lost() == 1
    channel.kernel_received += 500  # seq 104-603 went through the kernel
    channel.relayed += 500
    assert channel.lost() == 1
    # Back in the relay: the stream goes on from the packet it reads, not counted as a gap.
    channel.offloaded = False
    channel.latest = rtp(604)
    channel.received += 1
    assert channel.lost() == 1
    channel.latest = rtp(607)  # 605 and 606 lost
    channel.received += 1
    assert channel.lost() == 3
    assert channel.total_received == 3 + 500 + 2


def test_a_copied_channel_keeps_its_stream_the_relay_reads_every_packet() -> None:
    channel = Channel(0.0)
    channel.start_stream(rtp(100))
    channel.received = 1
    channel.hand_to_kernel(copied=True)
    assert channel.offloaded
    for seq in (101, 102, 104):  # the copies, read by the relay; 103 is lost
        channel.latest = rtp(seq)
        channel.received += 1
    assert channel.lost() == 1
    assert channel.total_received == 4


def test_a_channel_the_kernel_forwards_is_not_relatched_by_a_stray_source() -> None:
    party = Party(Side.A, 20000, 0.0, relatch_seconds=1.0)
    channel = party.rtp
    assert party.accept_source(channel, ("10.0.0.2", 4000), rtp(1), 0.0) is SourceVerdict.LATCHED
    channel.hand_to_kernel()
    # Long past relatch_seconds by the relay's clock: the kernel's packets are not seen here.
    verdict = party.accept_source(channel, ("10.0.0.66", 6666), rtp(9), 100.0)
    assert verdict is SourceVerdict.REJECTED_FIRST
    assert channel.source == ("10.0.0.2", 4000)
    # Once handed back, a silent source may be replaced (a NAT rebinding), as before.
    channel.offloaded = False
    verdict = party.accept_source(channel, ("10.0.0.66", 6666), rtp(9), 100.0)
    assert verdict is SourceVerdict.RELATCHED


def test_what_the_kernel_forwarded_keeps_a_party_active() -> None:
    party = Party(Side.A, 20000, 0.0, relatch_seconds=1.0)
    assert party.observe(10.0) == 0.0
    party.rtp.kernel_received += 25
    assert party.observe(11.0) == 11.0
    assert party.observe(12.0) == 11.0
