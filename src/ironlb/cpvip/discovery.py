"""Which other control-plane nodes cpvip membership should probe, from the API's Node objects.

Optional and additive: `--peers` alone needs no API (the first node of `kubeadm init` has none to
ask), and the nodes listed there stay peers whatever the API says. Once a kubeconfig is given and
the API answers (through the VIP, once some node holds it), every Node labelled
`node-role.kubernetes.io/control-plane` is a peer at its first InternalIP of the VIP's family, on
this node's membership port (every cpvip of a cluster runs the same manifest). Pure: the shell
lists the Nodes and hands them over.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from ironlb.core import election, model
from ironlb.core.addresses import IP
from ironlb.membership import model as member_model

CONTROL_PLANE_LABEL = "node-role.kubernetes.io/control-plane"
"""What kubeadm (and k3s, and Cluster API's kubeadm provider) label control-plane Nodes with."""


def peers_from_nodes(
    nodes: Iterable[model.Node], own: IP, port: int
) -> dict[election.NodeName, member_model.Endpoint]:
    """The control-plane Nodes' addresses in `own`'s family, this node (`own`) left out."""
    found: dict[election.NodeName, member_model.Endpoint] = {}
    for node in nodes:
        if CONTROL_PLANE_LABEL not in node.metadata.labels:
            continue
        ip = next((ip for ip in node.internal_ips if ip.version == own.version), None)
        if ip is None or ip == own:
            continue
        found[election.NodeName(str(ip))] = member_model.Endpoint(ip, port)
    return found


def merged(
    static: Mapping[election.NodeName, member_model.Endpoint],
    discovered: Mapping[election.NodeName, member_model.Endpoint],
) -> dict[election.NodeName, member_model.Endpoint]:
    """`--peers` always, and what the API says (a `--peers` entry wins: it names the port)."""
    return {**discovered, **static}
