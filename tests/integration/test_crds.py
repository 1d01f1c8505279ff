"""Users' MetalLB manifests apply unchanged to the real API server and parse into ironlb's models;
malformed ones are rejected, by the API server or by the parser, naming the field."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import yaml

from ironlb.core import config
from ironlb.k8s import client as k8s
from ironlb.lab import cluster as lab_cluster
from support import seeds

pytestmark = pytest.mark.integration

DOCUMENTS = seeds.seed_documents()
RESOURCES = {
    "IPAddressPool": k8s.IP_ADDRESS_POOLS,
    "L2Advertisement": k8s.L2_ADVERTISEMENTS,
    "BGPAdvertisement": k8s.BGP_ADVERTISEMENTS,
    "BGPPeer": k8s.BGP_PEERS,
    "BFDProfile": k8s.BFD_PROFILES,
    "Community": k8s.COMMUNITIES,
}


def test_the_seeds_hold_manifests() -> None:
    assert len(DOCUMENTS) >= 3, f"expected the users' manifests under {seeds.SEEDS}"


@pytest.mark.parametrize(("where", "document"), DOCUMENTS, ids=[w for w, _ in DOCUMENTS])
async def test_seed_manifest_applies_unchanged_and_parses(
    cluster: lab_cluster.Cluster, admin: k8s.Client, where: str, document: dict[str, Any]
) -> None:
    namespace = document["metadata"].get("namespace", "default")
    cluster.kubectl("create", "namespace", namespace, check=False)
    cluster.kubectl("apply", "-f", "-", stdin=yaml.safe_dump(document))
    resource = RESOURCES[document["kind"]]
    stored = await admin.get(resource, document["metadata"]["name"], namespace)
    parsed = config.parse(stored)
    assert parsed.name == document["metadata"]["name"]
    assert document["kind"] == parsed.KIND


def pool(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "metallb.io/v1beta1",
        "kind": "IPAddressPool",
        "metadata": {"name": name, "namespace": "metallb-system"},
        "spec": {"addresses": ["192.0.2.0/28"], **spec},
    }


def test_unknown_field_is_rejected_by_the_api_server(cluster: lab_cluster.Cluster) -> None:
    doc = pool("unknown-field", avoidBuggyIps=True)
    out = cluster.control_plane.run_kubectl(
        "apply", "-f", "-", stdin=yaml.safe_dump(doc), check=False
    )
    assert out.returncode != 0
    assert 'unknown field "spec.avoidBuggyIps"' in out.stderr


def test_negative_priority_is_rejected_by_the_api_server(cluster: lab_cluster.Cluster) -> None:
    doc = pool("negative-priority", serviceAllocation={"priority": -1})
    out = cluster.control_plane.run_kubectl(
        "apply", "-f", "-", stdin=yaml.safe_dump(doc), check=False
    )
    assert out.returncode != 0
    assert "spec.serviceAllocation.priority" in out.stderr
    assert "greater than or equal to 0" in out.stderr


async def test_reversed_range_is_reported_by_the_parser_naming_the_field(
    cluster: lab_cluster.Cluster, admin: k8s.Client
) -> None:
    doc = pool("reversed", addresses=["192.0.2.1/32", "192.0.2.9-192.0.2.1"])
    # The schema cannot order two addresses; without the webhook the object is stored...
    cluster.kubectl("apply", "-f", "-", stdin=yaml.safe_dump(doc))
    stored = await admin.get(k8s.IP_ADDRESS_POOLS, "reversed", "metallb-system")
    # ...and the parser refuses it at the boundary, saying where.
    with pytest.raises(config.ConfigError) as bad:
        config.parse(stored)
    assert bad.value.path == "spec.addresses[1]"
    assert "IPAddressPool metallb-system/reversed" in str(bad.value)
    await admin.delete(k8s.IP_ADDRESS_POOLS, "reversed", "metallb-system")


def test_bgp_peer_exclusive_fields_are_enforced_by_cel(cluster: lab_cluster.Cluster) -> None:
    peer = {
        "apiVersion": "metallb.io/v1beta2",
        "kind": "BGPPeer",
        "metadata": {"name": "both-asns", "namespace": "metallb-system"},
        "spec": {
            "myASN": 64500,
            "peerASN": 64501,
            "dynamicASN": "external",
            "peerAddress": "198.18.0.1",
        },
    }
    out = cluster.control_plane.run_kubectl(
        "apply", "-f", "-", stdin=yaml.safe_dump(peer), check=False
    )
    assert out.returncode != 0
    assert "exactly one of peerASN and dynamicASN" in out.stderr
    fixed = copy.deepcopy(peer)
    del fixed["spec"]["dynamicASN"]
    cluster.kubectl("apply", "-f", "-", stdin=yaml.safe_dump(fixed))
    cluster.kubectl("delete", "bgppeer", "both-asns", "-n", "metallb-system")
