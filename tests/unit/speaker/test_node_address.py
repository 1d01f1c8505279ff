"""Where a speaker serves its probes and membership: the address the kubelet probes."""

from ironlb.core import model
from ironlb.speaker import speaker


def test_ipv6_primary_node_is_served_on_its_ipv6_address() -> None:
    node = model.parse_node(
        {
            "metadata": {"name": "n"},
            "status": {
                "addresses": [
                    {"type": "InternalIP", "address": "2001:db8::11"},
                    {"type": "InternalIP", "address": "192.0.2.11"},
                ]
            },
        }
    )
    assert speaker.node_address(node) == "2001:db8::11"
    assert speaker.node_address(None) is None
