"""A small async Kubernetes REST client: the one door between ironlb and the API server.

lightkube supplies what is hard to get right: kubeconfig and in-cluster configuration, exec
credential plugins, rotating service-account tokens, TLS, and the HTTP transport (httpx2).
On top of it this module speaks raw JSON: responses are decoded with msgspec and handed to the
caller as plain dicts, which the callers parse once into ironlb's typed models. Keeping the raw
path is what lets a restarted controller list 10 000 Services in a fraction of a second, and lets
`reflector` own list/watch/relist (lightkube's watch resumes from "now" after 410 Gone and loses
events in between).

Invariants: no lightkube or httpx2 exception escapes this package (all become `ApiError` or
`Unreachable`); every retry follows `core.backoff`; requests carry a timeout.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import httpx2
import msgspec
from lightkube.config import client_adapter, kubeconfig
from lightkube.core import exceptions as lk_exceptions

from ironlb.core import backoff

log = logging.getLogger(__name__)

Obj = dict[str, Any]
PatchType = Literal["merge", "json", "strategic", "apply"]

_CONTENT_TYPES: dict[PatchType, str] = {
    "merge": "application/merge-patch+json",
    "json": "application/json-patch+json",
    "strategic": "application/strategic-merge-patch+json",
    "apply": "application/apply-patch+yaml",
}

_json_decoder = msgspec.json.Decoder()


@dataclass(frozen=True, slots=True)
class Resource:
    """A REST resource: where objects of one kind live."""

    group: str
    version: str
    kind: str
    plural: str
    namespaced: bool = True

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    def path(
        self, namespace: str | None = None, name: str | None = None, sub: str | None = None
    ) -> str:
        base = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        if self.namespaced and namespace is not None:
            base += f"/namespaces/{namespace}"
        base += f"/{self.plural}"
        if name is not None:
            base += f"/{name}"
            if sub is not None:
                base += f"/{sub}"
        return base


SERVICES = Resource("", "v1", "Service", "services")
NAMESPACES = Resource("", "v1", "Namespace", "namespaces", namespaced=False)
NODES = Resource("", "v1", "Node", "nodes", namespaced=False)
SECRETS = Resource("", "v1", "Secret", "secrets")
CONFIGMAPS = Resource("", "v1", "ConfigMap", "configmaps")
SERVICE_ACCOUNTS = Resource("", "v1", "ServiceAccount", "serviceaccounts")
PODS = Resource("", "v1", "Pod", "pods")
EVENTS = Resource("events.k8s.io", "v1", "Event", "events")
ENDPOINT_SLICES = Resource("discovery.k8s.io", "v1", "EndpointSlice", "endpointslices")
LEASES = Resource("coordination.k8s.io", "v1", "Lease", "leases")
CRDS = Resource(
    "apiextensions.k8s.io", "v1", "CustomResourceDefinition", "customresourcedefinitions", False
)
VALIDATING_WEBHOOKS = Resource(
    "admissionregistration.k8s.io",
    "v1",
    "ValidatingWebhookConfiguration",
    "validatingwebhookconfigurations",
    namespaced=False,
)

IP_ADDRESS_POOLS = Resource("metallb.io", "v1beta1", "IPAddressPool", "ipaddresspools")
L2_ADVERTISEMENTS = Resource("metallb.io", "v1beta1", "L2Advertisement", "l2advertisements")
BGP_ADVERTISEMENTS = Resource("metallb.io", "v1beta1", "BGPAdvertisement", "bgpadvertisements")
BFD_PROFILES = Resource("metallb.io", "v1beta1", "BFDProfile", "bfdprofiles")
COMMUNITIES = Resource("metallb.io", "v1beta1", "Community", "communities")
BGP_PEERS = Resource("metallb.io", "v1beta2", "BGPPeer", "bgppeers")
SERVICE_L2_STATUSES = Resource("metallb.io", "v1beta1", "ServiceL2Status", "servicel2statuses")
SERVICE_BGP_STATUSES = Resource("metallb.io", "v1beta1", "ServiceBGPStatus", "servicebgpstatuses")
# ironlb doctor: what each speaker publishes, and MetalLB's deprecated pool kind.
SPEAKER_REPORTS = Resource("ironlb.io", "v1alpha1", "SpeakerReport", "speakerreports")
ADDRESS_POOLS = Resource("metallb.io", "v1beta1", "AddressPool", "addresspools")
CONFIGURATION_STATES = Resource(
    "metallb.io", "v1beta1", "ConfigurationState", "configurationstates"
)


class ApiError(Exception):
    """The API server answered with an error status. Build with `ApiError.of`, which gives the
    subclass of the statuses callers handle (`NotFound`, `Conflict`, `Gone`, `Forbidden`), so
    that they write `except k8s.NotFound` or `contextlib.suppress(k8s.NotFound)`."""

    def __init__(self, status: int, reason: str, message: str, retry_after: float | None = None):
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message
        self.retry_after = retry_after

    @classmethod
    def of(
        cls, status: int, reason: str, message: str, retry_after: float | None = None
    ) -> ApiError:
        kind = _BY_STATUS.get(status, ApiError)
        return kind(status, reason, message, retry_after)

    @property
    def not_found(self) -> bool:
        return self.status == 404

    @property
    def conflict(self) -> bool:
        return self.status == 409

    @property
    def gone(self) -> bool:
        return self.status == 410

    @property
    def forbidden(self) -> bool:
        return self.status == 403


class NotFound(ApiError):
    """404: the object (or its namespace, or its kind) does not exist."""


class Conflict(ApiError):
    """409: a stale resourceVersion, or the object already exists."""


class Gone(ApiError):
    """410: the resourceVersion a watch or list asked for is too old: list again."""


class Forbidden(ApiError):
    """403: RBAC does not allow it."""


_BY_STATUS: dict[int, type[ApiError]] = {404: NotFound, 409: Conflict, 410: Gone, 403: Forbidden}


class Unreachable(Exception):
    """The API server could not be reached (connection refused, reset, timed out)."""


class ConfigurationError(Exception):
    """No usable kubeconfig or in-cluster configuration."""


@dataclass(frozen=True, slots=True)
class WatchEvent:
    type: Literal["ADDED", "MODIFIED", "DELETED", "BOOKMARK"]
    object: Obj


def _retry_after(resp: httpx2.Response) -> float | None:
    value = resp.headers.get("Retry-After")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def _error_from(resp: httpx2.Response, body: bytes) -> ApiError:
    reason, message = resp.reason_phrase, body.decode(errors="replace")[:500]
    try:
        status = json.loads(body)
        reason = str(status.get("reason", reason))
        message = str(status.get("message", message))
    except (ValueError, AttributeError):
        pass
    return ApiError.of(resp.status_code, reason, message, _retry_after(resp))


class Client:
    """Async client for one API server and one identity. Use as `async with`."""

    def __init__(
        self,
        http: httpx2.AsyncClient,
        *,
        namespace: str = "default",
        retry: backoff.Policy | None = None,
    ) -> None:
        self._http = http
        self.namespace = namespace
        self._retry = retry or backoff.API_CALL

    @classmethod
    def from_config(
        cls,
        kubeconfig_path: str | Path | None = None,
        *,
        context: str | None = None,
        timeout: float = 10.0,
        max_connections: int = 64,
    ) -> Client:
        """From a kubeconfig file, or else in-cluster service account, or else ~/.kube/config."""
        try:
            if kubeconfig_path is not None:
                config = kubeconfig.KubeConfig.from_file(kubeconfig_path)
            else:
                config = kubeconfig.KubeConfig.from_env()
            single = config.get(context_name=context)
            if single is None:
                raise ConfigurationError("the kubeconfig has no current context")
            params = client_adapter.ConnectionParams(
                timeout=httpx2.Timeout(timeout), trust_env=False
            )
            # Watches hold a connection each; leave room for them next to ordinary requests.
            http = httpx2.AsyncClient(
                **params.httpx_params(single),
                limits=httpx2.Limits(max_connections=max_connections),
            )
        except lk_exceptions.ConfigError as e:
            raise ConfigurationError(str(e)) from e
        return cls(http, namespace=single.namespace or "default")

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._http.aclose()

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str | int] | None = None,
        body: Obj | list[Obj] | None = None,
        content_type: str = "application/json",
        http_timeout: float | None = None,
    ) -> Obj:
        """One request, retried on 429/5xx and connection errors per the retry policy."""
        content = None if body is None else msgspec.json.encode(body)
        headers = {"Content-Type": content_type, "Accept": "application/json"}
        attempt = backoff.Backoff(self._retry)
        while True:
            try:
                resp = await self._http.request(
                    method,
                    path,
                    params=params,
                    content=content,
                    headers=headers,
                    timeout=http_timeout if http_timeout is not None else httpx2.USE_CLIENT_DEFAULT,
                )
            except httpx2.TransportError as e:
                delay = attempt.next_delay(random.random())
                if delay is None:
                    raise Unreachable(f"{method} {path}: {type(e).__name__}: {e}") from e
                await asyncio.sleep(delay)
                continue
            if resp.status_code < 400:
                data = resp.content
                return _json_decoder.decode(data) if data else {}
            err = _error_from(resp, resp.content)
            if backoff.is_retriable_status(err.status):
                delay = attempt.next_delay(random.random(), err.retry_after)
                if delay is not None:
                    log.debug("retrying %s %s after %s in %.2fs", method, path, err, delay)
                    await asyncio.sleep(delay)
                    continue
            raise err

    # --- verbs -------------------------------------------------------------------------------

    def _ns(self, res: Resource, namespace: str | None) -> str | None:
        return (namespace or self.namespace) if res.namespaced else None

    async def get(self, res: Resource, name: str, namespace: str | None = None) -> Obj:
        return await self.request("GET", res.path(self._ns(res, namespace), name))

    async def list_pages(
        self,
        res: Resource,
        namespace: str | None = None,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
        chunk: int = 500,
    ) -> AsyncIterator[tuple[list[Obj], str]]:
        """Objects page by page (namespace=None: all namespaces), each page with the list's
        resourceVersion (to watch from once the last page is in)."""
        params: dict[str, str | int] = {"limit": chunk}
        if label_selector:
            params["labelSelector"] = label_selector
        if field_selector:
            params["fieldSelector"] = field_selector
        while True:
            page = await self.request("GET", res.path(namespace), params=params)
            items = page.get("items") or []
            for item in items:
                # List items lack kind/apiVersion; restore them so parsers see whole objects.
                item.setdefault("kind", res.kind)
                item.setdefault("apiVersion", res.api_version)
            meta = page.get("metadata") or {}
            yield items, str(meta.get("resourceVersion", ""))
            token = meta.get("continue")
            if not token:
                return
            params["continue"] = token

    async def list_all(
        self,
        res: Resource,
        namespace: str | None = None,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> tuple[list[Obj], str]:
        """All objects, and the resourceVersion to watch from. namespace=None: all."""
        items: list[Obj] = []
        version = ""
        async for page, rv in self.list_pages(
            res, namespace, label_selector=label_selector, field_selector=field_selector
        ):
            items.extend(page)
            version = rv
        return items, version

    async def watch(
        self,
        res: Resource,
        resource_version: str,
        namespace: str | None = None,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
        timeout_seconds: int = 300,
    ) -> AsyncIterator[WatchEvent]:
        """One watch request, with bookmarks; ends when the server closes it.

        Raises ApiError (410 Gone means: relist) or Unreachable. Resuming is the caller's job.
        """
        params: dict[str, str | int] = {
            "watch": "true",
            "allowWatchBookmarks": "true",
            "resourceVersion": resource_version,
            "timeoutSeconds": timeout_seconds,
        }
        if label_selector:
            params["labelSelector"] = label_selector
        if field_selector:
            params["fieldSelector"] = field_selector
        timeout = httpx2.Timeout(10.0, read=timeout_seconds + 30.0)
        try:
            async with self._http.stream(
                "GET", res.path(namespace), params=params, timeout=timeout
            ) as resp:
                if resp.status_code >= 400:
                    raise _error_from(resp, await resp.aread())
                async for line in resp.aiter_lines():
                    if not line:
                        continue
                    event = _json_decoder.decode(line)
                    kind, obj = event.get("type"), event.get("object") or {}
                    if kind == "ERROR":
                        raise ApiError.of(
                            int(obj.get("code", 500)),
                            str(obj.get("reason", "")),
                            str(obj.get("message", "")),
                        )
                    obj.setdefault("kind", res.kind)
                    obj.setdefault("apiVersion", res.api_version)
                    yield WatchEvent(kind, obj)
        except httpx2.TransportError as e:
            raise Unreachable(f"watch {res.plural}: {type(e).__name__}: {e}") from e
        except msgspec.DecodeError as e:
            raise Unreachable(f"watch {res.plural}: undecodable event: {e}") from e

    async def create(self, res: Resource, body: Obj, namespace: str | None = None) -> Obj:
        ns = self._ns(res, namespace or (body.get("metadata") or {}).get("namespace"))
        body = {"apiVersion": res.api_version, "kind": res.kind, **body}
        return await self.request("POST", res.path(ns), body=body)

    async def replace(
        self, res: Resource, body: Obj, namespace: str | None = None, sub: str | None = None
    ) -> Obj:
        meta = body["metadata"]
        ns = self._ns(res, namespace or meta.get("namespace"))
        return await self.request("PUT", res.path(ns, meta["name"], sub), body=body)

    async def patch(
        self,
        res: Resource,
        name: str,
        body: Obj | list[Obj],
        namespace: str | None = None,
        *,
        patch_type: PatchType = "merge",
        sub: str | None = None,
        field_manager: str | None = None,
        force: bool = False,
    ) -> Obj:
        params: dict[str, str | int] = {}
        if field_manager:
            params["fieldManager"] = field_manager
        if force:
            params["force"] = "true"
        return await self.request(
            "PATCH",
            res.path(self._ns(res, namespace), name, sub),
            params=params,
            body=body,
            content_type=_CONTENT_TYPES[patch_type],
        )

    async def apply(
        self,
        res: Resource,
        body: Obj,
        *,
        field_manager: str,
        sub: str | None = None,
        force: bool = True,
    ) -> Obj:
        """Server-side apply of a whole object (or its status with sub="status")."""
        body = {"apiVersion": res.api_version, "kind": res.kind, **body}
        meta = body["metadata"]
        return await self.patch(
            res,
            meta["name"],
            body,
            meta.get("namespace"),
            patch_type="apply",
            sub=sub,
            field_manager=field_manager,
            force=force,
        )

    async def delete(
        self, res: Resource, name: str, namespace: str | None = None, *, missing_ok: bool = True
    ) -> None:
        try:
            await self.request("DELETE", res.path(self._ns(res, namespace), name))
        except ApiError as e:
            if not (missing_ok and e.not_found):
                raise
