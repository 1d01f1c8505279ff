"""Entry points: `ironlb controller | speaker | lab | status | doctor | cpvip`.

Each subcommand's flags are also readable from `IRONLB_<COMMAND>_<FLAG>` environment variables
(click's auto_envvar_prefix), so the same settings work in a Pod spec and on a terminal.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click
import yaml

from ironlb.controller import main as controller_main
from ironlb.controller import settings as controller_settings
from ironlb.core import model as core_model
from ironlb.core import settings as core_settings
from ironlb.cpvip import bgpmode as cpvip_bgp
from ironlb.cpvip import main as cpvip_main
from ironlb.cpvip import manifest as cpvip_manifest
from ironlb.cpvip import settings as cpvip_settings
from ironlb.doctor import command as doctor_command
from ironlb.doctor import gather as doctor_gather
from ironlb.k8s import client as k8s_client
from ironlb.lab import netns, playground
from ironlb.migrate import command as migrate_command
from ironlb.speaker import main as speaker_main
from ironlb.speaker import settings as speaker_settings

T = TypeVar("T")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="ironlb")
def cli() -> None:
    """ironlb: a bare-metal load balancer for Kubernetes."""


def _patterns(_ctx: click.Context, _param: click.Parameter, value: Any) -> tuple[str, ...]:
    """A repeatable list option: each value may itself hold several, comma-separated."""
    return tuple(p for v in value or () for p in core_settings.split_patterns(v))


def settings_options(cls: type[Any]) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Decorate a command with one option per field of a settings dataclass."""

    def decorate(fn: Callable[..., None]) -> Callable[..., None]:
        for f in reversed(dataclasses.fields(cls)):
            kind = str(f.type).replace(" | None", "")
            many = kind.startswith("tuple[")
            click_type = {"int": int, "float": float, "bool": bool}.get(kind, str)
            default = None if f.default is dataclasses.MISSING else f.default
            flag = "--" + f.name.replace("_", "-")
            if click_type is bool:
                flag = f"{flag}/--no-{flag[2:]}"
            fn = click.option(
                flag,
                f.name,
                type=click_type,
                default=default,
                multiple=many,
                callback=_patterns if many else None,
                show_default=default is not None,
                help=f.metadata.get("help", ""),
                show_envvar=True,
            )(fn)
        return fn

    return decorate


def _settings(cls: type[T], values: dict[str, Any]) -> T:
    """Build (and so validate) a settings object; a bad value is one line naming the flag and
    its environment variable, and exit status 2 (as click's own usage errors)."""
    try:
        return cls(**{k: v for k, v in values.items() if v is not None})
    except core_settings.SettingError as e:
        ctx = click.get_current_context()
        raise click.UsageError(f"invalid {_flag_and_env(ctx, e.field)}: {e.problem}", ctx) from None


def _flag_and_env(ctx: click.Context, name: str) -> str:
    flag = "--" + name.replace("_", "-")
    prefix = ctx.auto_envvar_prefix
    return f"{flag} ({prefix}_{name.upper()})" if prefix else flag


_log_format = click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    show_envvar=True,
    help="Log lines as text or as one JSON object each.",
)
_log_level = click.option(
    "--log-level",
    # "warn" is MetalLB's spelling (its charts and manifests pass it), the same as "warning".
    type=click.Choice(["debug", "info", "warn", "warning", "error"]),
    default="info",
    show_default=True,
    show_envvar=True,
    help="Lowest level logged.",
)
_LEVELS = {"warn": "WARNING"}


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def _setup_logging(fmt: str, level: str) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(
        _JsonFormatter()
        if fmt == "json"
        else logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    logging.basicConfig(level=_LEVELS.get(level, level.upper()), handlers=[handler], force=True)
    # The HTTP and netlink libraries log every request and message; ironlb logs what matters.
    for noisy in ("httpcore", "httpcore2", "httpx", "httpx2", "hpack", "pyroute2"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


@cli.command()
@settings_options(controller_settings.Settings)
@_log_format
@_log_level
def controller(log_format: str, log_level: str, **values: Any) -> None:
    """Assign addresses to Services of type LoadBalancer, validate configuration (webhook)."""
    _setup_logging(log_format, log_level)
    settings = _settings(controller_settings.Settings, values)
    sys.exit(asyncio.run(controller_main.run(settings)))


@cli.command()
@settings_options(speaker_settings.Settings)
@_log_format
@_log_level
def speaker(log_format: str, log_level: str, **values: Any) -> None:
    """Announce the addresses this node owns: ARP/NDP with sub-second failover, and BGP."""
    _setup_logging(log_format, log_level)
    settings = _settings(speaker_settings.Settings, values)
    sys.exit(asyncio.run(speaker_main.run(settings)))


# --- cpvip (issue 11): the control-plane VIP ---------------------------------------------------
@cli.command()
@settings_options(cpvip_settings.Settings)
@_log_format
@_log_level
def cpvip(log_format: str, log_level: str, **values: Any) -> None:
    """Hold the control-plane VIP on the node whose kube-apiserver is healthy (no API needed)."""
    _setup_logging(log_format, log_level)
    settings = _settings(cpvip_settings.Settings, values)
    run = cpvip_bgp.run if settings.mode == "bgp" else cpvip_main.run
    sys.exit(asyncio.run(run(settings)))


@cli.group()
def manifest() -> None:
    """Print manifests to install ironlb pieces."""


_BGP_MANIFEST_OPTIONS = (
    "bgp_peers",
    "bgp_peer_asn",
    "bgp_local_asn",
    "bgp_peer_port",
    "bgp_hold_time",
    "bgp_router_id",
    "bgp_source_address",
    "bgp_bfd",
    "bgp_bfd_interval",
    "bgp_bfd_multiplier",
)
"""Flags of `ironlb cpvip --mode bgp` that `ironlb manifest cpvip` passes through as given."""


@manifest.command("cpvip")
@click.option("--address", required=True, help="The control-plane VIP (one IP address).")
@click.option("--interface", default=None, help="Interface (default: found from the address).")
@click.option("--peers", multiple=True, callback=_patterns, help="Other control-plane nodes.")
@click.option("--mode", type=click.Choice(["arp", "bgp"]), default="arp", show_default=True)
@click.option("--image", default=cpvip_manifest.DEFAULT_IMAGE, show_default=True)
@click.option("--key-path", default=cpvip_manifest.DEFAULT_KEY_PATH, show_default=True)
@click.option(
    "--kubeconfig-path",
    default=None,
    help="arp: host file of a kubeconfig to discover the other control-plane Nodes with.",
)
@click.option("--bgp-peers", multiple=True, callback=_patterns, help="bgp: the routers.")
@click.option("--bgp-peer-asn", type=int, default=None, help="bgp: the routers' AS number.")
@click.option("--bgp-local-asn", type=int, default=None, help="bgp: the nodes' AS number.")
@click.option("--bgp-peer-port", type=int, default=None, help="bgp: the routers' BGP port.")
@click.option("--bgp-hold-time", type=int, default=None, help="bgp: hold time in seconds.")
@click.option("--bgp-router-id", default=None, help="bgp: router ID (default: per node).")
@click.option("--bgp-source-address", default=None, help="bgp: source address.")
@click.option("--bgp-bfd", is_flag=True, default=None, help="bgp: run BFD with the routers.")
@click.option("--bgp-bfd-interval", type=int, default=None, help="bgp: BFD interval (ms).")
@click.option("--bgp-bfd-multiplier", type=int, default=None, help="bgp: BFD multiplier.")
@click.option("--bgp-password-path", default=None, help="bgp: host file with the TCP MD5 password.")
def manifest_cpvip(
    address: str,
    interface: str | None,
    peers: tuple[str, ...],
    mode: str,
    image: str,
    key_path: str,
    kubeconfig_path: str | None,
    bgp_password_path: str | None,
    **bgp: Any,
) -> None:
    """The static Pod of `ironlb cpvip`, for /etc/kubernetes/manifests."""
    problem = cpvip_settings.vip_address(address) or cpvip_settings.peers(peers)
    if problem is not None:
        raise click.UsageError(problem)
    given = {k: v for k, v in bgp.items() if v not in (None, ())}
    if bgp_password_path is not None:
        given["bgp_password_path"] = bgp_password_path
    if mode == "arp" and given:
        raise click.UsageError(f"--{next(iter(given)).replace('_', '-')}: only for --mode bgp")
    bgp_args: list[str] = []
    if mode == "bgp":
        if interface or peers or kubeconfig_path:
            flag = "--interface" if interface else "--peers" if peers else "--kubeconfig-path"
            raise click.UsageError(f"{flag}: only for --mode arp (this is --mode bgp)")
        given.pop("bgp_password_path", None)
        try:
            cpvip_settings.Settings(address=address, mode="bgp", **given)
        except core_settings.SettingError as e:
            raise click.UsageError(f"invalid --{e.field.replace('_', '-')}: {e.problem}") from None
        for name in _BGP_MANIFEST_OPTIONS:
            flag, value = "--" + name.replace("_", "-"), given.get(name)
            if value is True:
                bgp_args.append(flag)
            elif isinstance(value, tuple):
                bgp_args += [f"{flag}={v}" for v in value]
            elif value is not None:
                bgp_args.append(f"{flag}={value}")
    pod = cpvip_manifest.static_pod(
        address,
        interface=interface,
        peers=peers,
        mode=mode,
        image=image,
        key_path=key_path,
        kubeconfig_path=kubeconfig_path,
        bgp_args=bgp_args,
        bgp_password_path=bgp_password_path,
    )
    click.echo(yaml.safe_dump(pod, sort_keys=False), nl=False)


# --- end cpvip ------------------------------------------------------------------------------------


@cli.group()
def lab() -> None:
    """A whole cluster on this machine, in network namespaces (needs root)."""


_name = click.option("--name", default="lab", show_default=True, help="Lab name (3-12 [a-z0-9]).")


def _lab_errors(fn: Callable[[], None]) -> None:
    """Run `fn`, turning a LabError into a one-line message and exit status 1."""
    try:
        fn()
    except netns.LabError as e:
        click.echo(f"ironlb lab: {e}", err=True)
        sys.exit(1)


@lab.command("up")
@_name
@click.option(
    "--process",
    is_flag=True,
    help="The process lab (fast; no kubelet): ironlb runs as processes in the node namespaces,"
    " the lab writes Nodes and EndpointSlices. Default: real nodes (kubelet, containerd,"
    " kube-proxy) with ironlb installed by its Helm chart.",
)
@click.option(
    "--control-plane",
    is_flag=True,
    help="The control-plane lab instead: three control-plane hosts (an etcd member and a"
    " kube-apiserver each) behind one VIP held by `ironlb cpvip`, and a client whose kubeconfig"
    " points at the VIP.",
)
def lab_up(name: str, process: bool, control_plane: bool) -> None:
    """Bring the lab up and leave it running."""

    def go() -> None:
        handle = playground.up(name, process=process, control_plane=control_plane)
        click.echo(playground.next_steps(handle))

    _lab_errors(go)


@lab.command("down")
@_name
def lab_down(name: str) -> None:
    """Remove the lab: processes, namespaces and files."""
    _lab_errors(lambda: click.echo("removed" if playground.down(name) else "no lab was running"))


@lab.command("status")
@_name
def lab_status(name: str) -> None:
    """Show the lab's hosts and whether its API server is ready."""
    _lab_errors(lambda: click.echo(playground.status(name)))


@lab.command("kubectl", context_settings={"ignore_unknown_options": True})
@_name
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def lab_kubectl(name: str, args: tuple[str, ...]) -> None:
    """kubectl against the lab's API server (run inside the lab)."""
    _lab_errors(lambda: _exec(playground.kubectl_argv(name, list(args))))


@lab.command("shell")
@_name
@click.argument("host", required=False)
def lab_shell(name: str, host: str | None) -> None:
    """A shell on one lab host (default: the one kubectl runs on, with KUBECONFIG set: the
    control-plane host; in the control-plane lab, the client)."""
    _lab_errors(lambda: _exec(playground.shell_argv(name, host)))


# --- `ironlb migrate` (issue 13): switching from MetalLB -----------------------------------
cli.add_command(migrate_command.migrate)


# --- ironlb status / ironlb doctor (also `kubectl ironlb ...`): see ironlb.doctor ----------------


def _doctor_options(fn: Callable[..., None]) -> Callable[..., None]:
    for option in reversed(
        [
            click.option("--kubeconfig", default=None, help="Path to the kubeconfig file."),
            click.option("--context", default=None, help="kubeconfig context to use."),
            click.option(
                "--ironlb-namespace",
                default="metallb-system",
                show_default=True,
                help="Namespace of the metallb.io configuration and the speakers' reports.",
            ),
            click.option("--lb-class", default=None, help="The loadBalancerClass ironlb serves."),
            click.option(
                "-o",
                "--output",
                type=click.Choice(["text", "json"]),
                default="text",
                show_default=True,
            ),
        ]
    ):
        fn = option(fn)
    return fn


def _snapshot(
    kubeconfig: str | None, context: str | None, namespace: str, lb_class: str | None
) -> Any:
    async def go() -> Any:
        async with k8s_client.Client.from_config(kubeconfig, context=context) as client:
            return await doctor_gather.gather(client, namespace, lb_class=lb_class)

    try:
        return asyncio.run(go())
    except (k8s_client.ConfigurationError, doctor_gather.GatherError) as e:
        raise click.ClickException(str(e)) from None


@cli.command("status")
@_doctor_options
def status_command(
    kubeconfig: str | None,
    context: str | None,
    ironlb_namespace: str,
    lb_class: str | None,
    output: str,
) -> None:
    """Pools, LoadBalancer Services, speakers, BGP sessions and the controller, on one screen."""
    gathered = _snapshot(kubeconfig, context, ironlb_namespace, lb_class)
    data = doctor_command.status_of(gathered.snapshot)
    if output == "json":
        click.echo(json.dumps(data, indent=2))
        return
    colour = sys.stdout.isatty()
    click.echo(doctor_command.render_status(data, colour=colour), color=colour)
    for note in gathered.notes:
        click.echo(f"note: {note}", err=True)


@cli.command("doctor")
@click.argument("service", required=False)
@click.option("-n", "--namespace", default=None, help="Namespace of SERVICE (default: default).")
@_doctor_options
def doctor_command_(
    service: str | None,
    namespace: str | None,
    kubeconfig: str | None,
    context: str | None,
    ironlb_namespace: str,
    lb_class: str | None,
    output: str,
) -> None:
    """Why a LoadBalancer Service (NAMESPACE/NAME, or NAME with -n) has no address or does not
    answer; every LoadBalancer Service without SERVICE. Exit status 1 when something is wrong."""
    only = None
    if service:
        ns, _, name = service.rpartition("/")
        only = core_model.service_key(ns or namespace or "default", name)
    gathered = _snapshot(kubeconfig, context, ironlb_namespace, lb_class)
    if only is not None and not any(s.key == only for s in gathered.snapshot.services):
        raise click.ClickException(f"Service {only} not found")
    findings = doctor_command.doctor_of(gathered.snapshot, only)
    if output == "json":
        click.echo(doctor_command.findings_json(findings))
    else:
        colour = sys.stdout.isatty()
        click.echo(doctor_command.render_findings(findings, colour=colour), color=colour)
        for note in gathered.notes:
            click.echo(f"note: {note}", err=True)
    if findings:
        sys.exit(1)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def kubectl_ironlb() -> None:
    """ironlb as a kubectl plugin: `kubectl ironlb status|doctor`."""


kubectl_ironlb.add_command(status_command)
kubectl_ironlb.add_command(doctor_command_)


def kubectl_main() -> None:
    """Entry point of the `kubectl-ironlb` executable."""
    try:
        kubectl_ironlb.main(prog_name="kubectl ironlb", standalone_mode=False)
    except click.exceptions.Abort:
        sys.exit(1)
    except click.ClickException as e:
        click.echo(f"kubectl ironlb: {e.format_message()}", err=True)
        sys.exit(e.exit_code)


# --- end of ironlb status / doctor --------------------------------------------------------------


def _exec(argv: list[str]) -> None:
    os.execvp(argv[0], argv)


def main() -> None:
    """Run the CLI; a usage error or a bad setting is one line on stderr, without the usage
    text, and exit status 2."""
    try:
        cli.main(prog_name="ironlb", auto_envvar_prefix="IRONLB", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("Aborted!", err=True)
        sys.exit(1)
    except click.ClickException as e:
        click.echo(f"{_command_path(e)}: {_message(e)}", err=True)
        sys.exit(e.exit_code)


def _command_path(e: click.ClickException) -> str:
    ctx = getattr(e, "ctx", None)
    return ctx.command_path if isinstance(ctx, click.Context) else "ironlb"


def _message(e: click.ClickException) -> str:
    """click's message, naming the environment variable a bad value came from."""
    if isinstance(e, click.BadParameter) and e.ctx is not None and e.param is not None:
        return f"invalid {_flag_and_env(e.ctx, e.param.name or '')}: {e.message}"
    return e.format_message()


if __name__ == "__main__":
    main()
