"""Entry points: `ironlb controller | speaker | lab | status | doctor | cpvip`.

Each subcommand's flags are also readable from `IRONLB_<COMMAND>_<FLAG>` environment variables
(click's auto_envvar_prefix), so the same settings work in a Pod spec and on a terminal.
"""

from __future__ import annotations

import sys

import click


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


def main() -> None:
    cli(auto_envvar_prefix="IRONLB")
