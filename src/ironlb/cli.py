"""Entry points: `ironlb controller | speaker | lab | status | doctor | cpvip`.

Each subcommand's flags are also readable from `IRONLB_<COMMAND>_<FLAG>` environment variables
(click's auto_envvar_prefix), so the same settings work in a Pod spec and on a terminal.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

import click

from ironlb.lab import netns, playground


def _not_implemented(what: str, issue: str) -> None:
    click.echo(f"ironlb {what}: not implemented yet ({issue})", err=True)
    sys.exit(2)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="ironlb")
def cli() -> None:
    """ironlb: a bare-metal load balancer for Kubernetes."""


@cli.command()
def controller() -> None:
    """Assign addresses to Services of type LoadBalancer."""
    _not_implemented("controller", "the controller issue is still open")


@cli.command()
def speaker() -> None:
    """Announce assigned addresses from this node (ARP/NDP or BGP)."""
    _not_implemented("speaker", "the speaker issues are still open")


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
def lab_up(name: str) -> None:
    """Bring the lab up and leave it running."""

    def go() -> None:
        handle = playground.up(name)
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
@click.argument("host", default="ctl")
def lab_shell(name: str, host: str) -> None:
    """A shell on one lab host (default: the control-plane host, with kubectl set up)."""
    _lab_errors(lambda: _exec(playground.shell_argv(name, host)))


def _exec(argv: list[str]) -> None:
    os.execvp(argv[0], argv)


def main() -> None:
    cli(auto_envvar_prefix="IRONLB")


if __name__ == "__main__":
    main()
