"""`ironlb migrate configmap [FILE] | addresspools [FILE] | backup | crds [DIR]`.

Reads MetalLB's configuration from the cluster (or from files), prints what ironlb needs as YAML
on stdout, and changes the cluster only with `--apply`. Whatever it cannot convert is one line on
stderr naming the field, and the exit status is 1; `--apply` then applies nothing, so that a
cluster is never left half migrated. The decisions are `core.migrate`'s; this is the I/O.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import click

from ironlb.core import migrate as core
from ironlb.k8s import client as k8s

FIELD_MANAGER = "ironlb-migrate"

ADDRESS_POOLS_V1BETA1 = k8s.Resource("metallb.io", "v1beta1", "AddressPool", "addresspools")
BGP_PEERS_V1BETA1 = k8s.Resource("metallb.io", "v1beta1", "BGPPeer", "bgppeers")
_BY_KIND = {
    (r.api_version, r.kind): r
    for r in (
        k8s.IP_ADDRESS_POOLS,
        k8s.L2_ADVERTISEMENTS,
        k8s.BGP_ADVERTISEMENTS,
        k8s.BFD_PROFILES,
        k8s.COMMUNITIES,
        k8s.BGP_PEERS,
    )
}
_BACKUP = [k8s.Resource(*kind) for kind in core.BACKUP_KINDS]


class MigrateError(click.ClickException):
    """One line on stderr, exit status 1."""


def _kinds_of(objects: Iterable[dict[str, Any]]) -> dict[tuple[str, str], k8s.Resource]:
    found = {}
    for o in objects:
        key = (str(o.get("apiVersion")), str(o.get("kind")))
        if key not in _BY_KIND:
            raise MigrateError(f"cannot apply {key[0]} {key[1]}: not a kind ironlb serves")
        found[key] = _BY_KIND[key]
    return found


async def apply_objects(client: k8s.Client, objects: Sequence[dict[str, Any]]) -> None:
    """Server-side apply each object; the first refusal stops with its message."""
    kinds = _kinds_of(objects)
    for o in objects:
        res = kinds[(o["apiVersion"], o["kind"])]
        try:
            await client.apply(res, o, field_manager=FIELD_MANAGER)
        except k8s.ApiError as e:
            meta = o["metadata"]
            raise MigrateError(
                f"{o['kind']} {meta.get('namespace')}/{meta['name']} refused: {e.message}"
            ) from None
        click.echo(
            f"applied {o['kind']} {o['metadata'].get('namespace')}/{o['metadata']['name']}",
            err=True,
        )


def _finish(result: core.Result) -> None:
    """Print the objects; the problems to stderr and exit 1 if any."""
    click.echo(core.to_yaml(result.objects), nl=False)
    for p in result.problems:
        click.echo(f"not converted: {p}", err=True)
    if result.problems:
        sys.exit(1)


def _run(kubeconfig: str | None, work: Callable[[k8s.Client], Awaitable[None]]) -> None:
    async def main() -> None:
        try:
            async with k8s.Client.from_config(kubeconfig) as client:
                await work(client)
        except k8s.ConfigurationError as e:
            raise MigrateError(f"no cluster to talk to: {e}") from None
        except k8s.Unreachable as e:
            raise MigrateError(f"API server unreachable: {e}") from None

    asyncio.run(main())


def _read(path: str) -> list[Any]:
    try:
        text = Path(path).read_text() if path != "-" else sys.stdin.read()
        return core.load_all(text)
    except OSError as e:
        raise MigrateError(f"cannot read {path}: {e.strerror}") from None
    except ValueError as e:  # yaml.YAMLError is one
        raise MigrateError(f"{path} is not YAML: {str(e).splitlines()[0]}") from None


_kubeconfig = click.option(
    "--kubeconfig",
    envvar="KUBECONFIG",
    help="kubeconfig file (default: in-cluster, then ~/.kube/config).",
)
DEFAULT_NAMESPACE = "metallb-system"
_namespace = click.option(
    "--namespace",
    "-n",
    help="Namespace of MetalLB's configuration and of what is written (default: a file's own"
    f" namespace, else {DEFAULT_NAMESPACE}).",
)
_apply = click.option(
    "--apply", is_flag=True, help="Write the result to the cluster (server-side apply)."
)


@click.group()
def migrate() -> None:
    """Move MetalLB's configuration to ironlb: print the converted YAML, or --apply it."""


@migrate.command("configmap")
@click.argument("file", required=False)
@_namespace
@_kubeconfig
@_apply
def configmap(file: str | None, namespace: str | None, kubeconfig: str | None, apply: bool) -> None:
    """MetalLB's legacy `config` ConfigMap (from FILE, `-` for stdin, or the cluster) to
    IPAddressPool, L2Advertisement, BGPAdvertisement, BGPPeer, BFDProfile and Community."""
    if file is not None:
        from_file = _configmap_file(file, namespace)
        if not apply:
            _finish(from_file)
            return

    async def work(client: k8s.Client) -> None:
        if file is not None:
            await _apply_or_print(client, from_file, apply)
            return
        ns = namespace or DEFAULT_NAMESPACE
        try:
            cm = await client.get(k8s.CONFIGMAPS, core.LEGACY_CONFIGMAP, ns)
        except k8s.ApiError as e:
            raise MigrateError(f"ConfigMap {ns}/{core.LEGACY_CONFIGMAP}: {e.message}") from None
        text = core.configmap_data(cm)
        if text is None:
            raise MigrateError(f"ConfigMap {ns}/{core.LEGACY_CONFIGMAP} has no data.config")
        await _apply_or_print(client, core.from_configmap(text, ns), apply)

    _run(kubeconfig, work)


def _configmap_file(file: str, namespace: str | None) -> core.Result:
    docs = _read(file)
    maps = [d for d in docs if isinstance(d, dict) and d.get("kind") == "ConfigMap"]
    if len(maps) != 1:
        raise MigrateError(f"{file}: expected one ConfigMap, found {len(maps)}")
    text = core.configmap_data(maps[0])
    if text is None:
        raise MigrateError(f"{file}: the ConfigMap has no data.config")
    own = (maps[0].get("metadata") or {}).get("namespace")
    return core.from_configmap(text, namespace or str(own or DEFAULT_NAMESPACE))


async def _apply_or_print(client: k8s.Client, result: core.Result, apply: bool) -> None:
    if not apply or result.problems:
        _finish(result)
        return
    await apply_objects(client, result.objects)


@migrate.command("addresspools")
@click.argument("file", required=False)
@_namespace
@_kubeconfig
@_apply
def addresspools(
    file: str | None, namespace: str | None, kubeconfig: str | None, apply: bool
) -> None:
    """v1beta1 AddressPool objects (MetalLB before v0.14) to IPAddressPool plus the matching
    L2Advertisement or BGPAdvertisement, and v1beta1 BGPPeer objects to v1beta2."""
    if file is not None and not apply:
        _finish(core.from_v1beta1(_in_namespace(_read(file), namespace)))
        return

    async def work(client: k8s.Client) -> None:
        if file is not None:
            objects = _in_namespace(_read(file), namespace)
        else:
            objects = []
            for res in (ADDRESS_POOLS_V1BETA1, BGP_PEERS_V1BETA1):
                try:
                    objects += (await client.list_all(res, namespace or DEFAULT_NAMESPACE))[0]
                except k8s.ApiError as e:
                    if not e.not_found:  # a cluster without the old kinds has nothing to convert
                        raise MigrateError(f"listing {res.plural}: {e.message}") from None
        await _apply_or_print(client, core.from_v1beta1(objects), apply)

    _run(kubeconfig, work)


def _in_namespace(docs: Iterable[Any], namespace: str | None) -> list[dict[str, Any]]:
    """The objects of a file, moved to `namespace` if one is given."""
    objects = [d for d in docs if isinstance(d, dict)]
    if namespace is None:
        return objects
    return [
        {**o, "metadata": {**(o.get("metadata") or {}), "namespace": namespace}} for o in objects
    ]


@migrate.command("backup")
@_namespace
@_kubeconfig
def backup(namespace: str | None, kubeconfig: str | None) -> None:
    """Every metallb.io configuration object of the namespace as one YAML stream that can be
    applied again after MetalLB's CRDs (and with them every object) are gone."""

    ns = namespace or DEFAULT_NAMESPACE

    async def work(client: k8s.Client) -> None:
        saved: list[dict[str, Any]] = []
        for res in _BACKUP:
            try:
                items = (await client.list_all(res, ns))[0]
            except k8s.ApiError as e:
                if e.not_found:  # this cluster does not serve the kind (AddressPool after v0.14)
                    continue
                raise MigrateError(f"listing {res.plural}: {e.message}") from None
            saved += sorted(
                (core.for_backup(o) for o in items), key=lambda o: str(o["metadata"]["name"])
            )
        click.echo(core.to_yaml(saved), nl=False)
        click.echo(f"backed up {len(saved)} objects of namespace {ns}", err=True)

    _run(kubeconfig, work)


@migrate.command("crds")
@click.argument("directory", required=False)
@_kubeconfig
@_apply
def crds(directory: str | None, kubeconfig: str | None, apply: bool) -> None:
    """Report metallb.io CRDs that are MetalLB's (conversion webhook, MetalLB's schemas); with
    --apply, replace them by ironlb's from DIRECTORY (the chart's crds/), keeping every object,
    and create those of DIRECTORY that are missing."""
    ours: dict[str, dict[str, Any]] = {}
    if directory is not None:
        for path in sorted(Path(directory).glob("*.yaml")):
            for doc in _read(str(path)):
                if isinstance(doc, dict) and doc.get("kind") == "CustomResourceDefinition":
                    ours[doc["metadata"]["name"]] = doc
        if not ours:
            raise MigrateError(f"{directory}: no CustomResourceDefinition found")
    elif apply:
        raise MigrateError("--apply needs the directory of ironlb's CRDs (the chart's crds/)")

    async def work(client: k8s.Client) -> None:
        installed = (await client.list_all(k8s.CRDS))[0]
        existing = [c for c in installed if (c.get("spec") or {}).get("group") == "metallb.io"]
        foreign = [(c, core.crd_takeover_problem(c)) for c in existing]
        foreign = [(c, p) for c, p in foreign if p is not None]
        for _, problem in foreign:
            click.echo(problem)
        if not foreign:
            click.echo("every metallb.io CRD is ironlb's")
        if not apply:
            if foreign:
                sys.exit(1)
            return
        for c, _ in foreign:
            name = c["metadata"]["name"]
            if name not in ours:
                click.echo(f"{name}: not one of ironlb's CRDs; left as it is", err=True)
                continue
            try:
                await client.replace(k8s.CRDS, core.crd_replacement(c, ours[name]))
            except k8s.ApiError as e:
                raise MigrateError(f"replacing {name}: {e.message}") from None
            click.echo(f"replaced {name} with ironlb's", err=True)
        # Kinds MetalLB does not have (ConfigurationState, ironlb.io's SpeakerReport): Helm
        # would create them, and so does this, so that the result is complete without Helm too.
        have = {c["metadata"]["name"] for c in installed}
        for name, crd in sorted(ours.items()):
            if name not in have:
                try:
                    await client.create(k8s.CRDS, crd)
                except k8s.ApiError as e:
                    raise MigrateError(f"creating {name}: {e.message}") from None
                click.echo(f"created {name}", err=True)

    _run(kubeconfig, work)
