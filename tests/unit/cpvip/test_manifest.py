"""`ironlb manifest cpvip`: a static Pod with host network, only NET_ADMIN/NET_RAW, key from the
host; bad addresses refused in one line."""

from __future__ import annotations

from pathlib import Path

import yaml
from click.testing import CliRunner

from ironlb import cli
from ironlb.cpvip import manifest


def test_static_pod_shape() -> None:
    pod = manifest.static_pod("192.0.2.10", interface="eth0", peers=["192.0.2.3"])
    assert pod["kind"] == "Pod"
    assert pod["metadata"]["namespace"] == "kube-system"
    spec = pod["spec"]
    assert spec["hostNetwork"] is True
    (container,) = spec["containers"]
    assert container["args"][:2] == ["cpvip", "--address=192.0.2.10"]
    assert "--interface=eth0" in container["args"]
    assert "--peers=192.0.2.3" in container["args"]
    caps = container["securityContext"]["capabilities"]
    assert caps == {"drop": ["ALL"], "add": ["NET_ADMIN", "NET_RAW"]}
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    (mount,) = container["volumeMounts"]
    assert mount["mountPath"] == "/etc/ironlb-cpvip/key"
    assert "--key-file=/etc/ironlb-cpvip/key" in container["args"]
    assert spec["volumes"][0]["hostPath"] == {"path": manifest.DEFAULT_KEY_PATH, "type": "File"}


def test_cli_prints_yaml_and_refuses_a_cidr() -> None:
    runner = CliRunner()
    ok = runner.invoke(
        cli.cli,
        ["manifest", "cpvip", "--address", "2001:db8::10", "--peers", "2001:db8::3,2001:db8::4"],
    )
    assert ok.exit_code == 0, ok.output
    pod = yaml.safe_load(ok.output)
    assert pod["kind"] == "Pod"
    args = pod["spec"]["containers"][0]["args"]
    assert "--peers=2001:db8::3" in args
    assert "--peers=2001:db8::4" in args
    bad = runner.invoke(cli.cli, ["manifest", "cpvip", "--address", "192.0.2.10/24"])
    assert bad.exit_code == 2
    assert "CIDR" in bad.output


def test_bgp_mode_passes_its_flags_through_without_key_or_raw_sockets() -> None:
    runner = CliRunner()
    common = ["manifest", "cpvip", "--address", "192.0.2.30", "--mode", "bgp"]
    bgp = ["--bgp-peers", "198.51.100.1,198.51.100.2", "--bgp-peer-asn", "64500"]
    ok = runner.invoke(
        cli.cli,
        [*common, *bgp, "--bgp-local-asn", "64520", "--bgp-bfd", "--bgp-password-path", "/etc/pw"],
    )
    assert ok.exit_code == 0, ok.output
    (container,) = yaml.safe_load(ok.output)["spec"]["containers"]
    assert container["args"] == [
        "cpvip",
        "--address=192.0.2.30",
        "--mode=bgp",
        "--bgp-peers=198.51.100.1",
        "--bgp-peers=198.51.100.2",
        "--bgp-peer-asn=64500",
        "--bgp-local-asn=64520",
        "--bgp-bfd",
        "--bgp-password-file=/etc/ironlb-cpvip/bgp-password",
    ]
    assert container["securityContext"]["capabilities"]["add"] == ["NET_ADMIN"]
    (mount,) = container["volumeMounts"]
    assert mount["mountPath"] == "/etc/ironlb-cpvip/bgp-password"
    # Each bad combination: one line, exit status 2.
    for args, text in [
        ([*common, *bgp], "invalid --bgp-local-asn: required with --mode bgp"),
        ([*common, *bgp, "--bgp-local-asn", "0"], "invalid --bgp-local-asn: not an AS number"),
        ([*common[:4], *bgp], "--bgp-peers: only for --mode bgp"),
        ([*common, "--peers", "192.0.2.3"], "--peers: only for --mode arp"),
    ]:
        bad = runner.invoke(cli.cli, args)
        assert bad.exit_code == 2, bad.output
        assert text in bad.output


def test_readme_cluster_api_snippet_is_a_kubeadm_control_plane() -> None:
    readme = (Path(__file__).resolve().parents[3] / "README.md").read_text()
    section = readme.split("## Control-plane VIP", 1)[1].split("\n## ", 1)[0]
    blocks = [b.split("```", 1)[0] for b in section.split("```yaml\n")[1:]]
    docs = [yaml.safe_load(b) for b in blocks]
    (kcp,) = [d for d in docs if d.get("kind") == "KubeadmControlPlane"]
    assert kcp["apiVersion"].startswith("controlplane.cluster.x-k8s.io/")
    files = {f["path"]: f for f in kcp["spec"]["kubeadmConfigSpec"]["files"]}
    assert "/etc/kubernetes/manifests/ironlb-cpvip.yaml" in files
    assert manifest.DEFAULT_KEY_PATH in files


def test_kubeconfig_path_is_mounted_for_discovery_in_arp_mode_only() -> None:
    runner = CliRunner()
    common = ["manifest", "cpvip", "--address", "192.0.2.10"]
    ok = runner.invoke(cli.cli, [*common, "--kubeconfig-path", "/etc/kubernetes/cpvip.conf"])
    assert ok.exit_code == 0, ok.output
    spec = yaml.safe_load(ok.output)["spec"]
    (container,) = spec["containers"]
    assert "--kubeconfig=/etc/ironlb-cpvip/kubeconfig" in container["args"]
    assert {
        "name": "kubeconfig",
        "mountPath": "/etc/ironlb-cpvip/kubeconfig",
        "readOnly": True,
    } in (container["volumeMounts"])
    assert {
        "name": "kubeconfig",
        "hostPath": {"path": "/etc/kubernetes/cpvip.conf", "type": "File"},
    } in spec["volumes"]
    bgp = ["--mode", "bgp", "--bgp-peers", "198.51.100.1", "--bgp-peer-asn", "64500"]
    bad = runner.invoke(
        cli.cli, [*common, *bgp, "--bgp-local-asn", "64520", "--kubeconfig-path", "/x"]
    )
    assert bad.exit_code == 2
    assert "--kubeconfig-path: only for --mode arp" in bad.output
