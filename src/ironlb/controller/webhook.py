"""The validating admission webhook: its TLS certificate and its HTTP handler.

Certificates: the controller keeps a CA and a serving certificate (for
`<service>.<namespace>.svc`) in a Secret, and the CA in the ValidatingWebhookConfiguration's
`caBundle`; no cert-manager needed. Any replica creates them if missing; only the leader
rotates them, 30 days before expiry. During a rotation the bundle trusts the old and the new
CA, so the API server accepts both the old certificate (still served by other replicas) and the
new one. Every replica reloads its TLS context when the Secret changes.

A replica is ready to answer admission reviews (`untrusted` is None) only once the
configuration's `caBundle` trusts the certificate it serves: a replica behind the webhook
Service that the API server cannot verify fails every metallb.io write ("failed calling
webhook"). Until then it checks again every `UNTRUSTED_RECHECK` seconds, not every minute.

Decisions are `core.admission.review`, against the configuration objects in the controller's
caches.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import json
import logging
import ssl
import tempfile
from collections.abc import Callable
from pathlib import Path

from ironlb.controller import metrics
from ironlb.controller import settings as settings_
from ironlb.core import admission, config, pki
from ironlb.k8s import client as k8s
from ironlb.k8s import serving

log = logging.getLogger(__name__)

VALIDITY = datetime.timedelta(days=365)
RENEW_BEFORE = datetime.timedelta(days=30)
UNTRUSTED_RECHECK = 1.0


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


class Certificates:
    def __init__(self, client: k8s.Client, settings: settings_.Settings) -> None:
        self._client = client
        self._settings = settings
        # Private to this process (mode 0700), removed with the object or at exit.
        self._tmp = tempfile.TemporaryDirectory(prefix="ironlb-webhook-")
        self._dir = Path(self._tmp.name)
        self._loaded: bytes | None = None
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.untrusted: str | None = "no webhook certificate loaded yet"
        """None once the published caBundle trusts the certificate served; else why not."""

    def close(self) -> None:
        """Remove the key material from disk."""
        self._tmp.cleanup()

    @property
    def dns_name(self) -> str:
        return f"{self._settings.webhook_service}.{self._settings.namespace}.svc"

    def _issue(self, old_bundle: bytes) -> dict[str, str]:
        ca = pki.CertificateAuthority.create("ironlb-webhook-ca")
        cert, key = ca.issue(
            self.dns_name,
            dns=(self.dns_name, f"{self.dns_name}.cluster.local"),
            server=True,
            days=VALIDITY.days,
        )
        now = datetime.datetime.now(datetime.UTC)
        still_valid = (
            [c for c in pki.load_certs(old_bundle) if pki.valid_for(c, now).days > 0]
            if old_bundle
            else []
        )
        bundle = pki.pem_cert(ca.cert) + b"".join(pki.pem_cert(c) for c in still_valid)
        return {
            "ca.crt": _b64(bundle),
            "tls.crt": _b64(pki.pem_cert(cert)),
            "tls.key": _b64(pki.pem_key(key)),
        }

    def _needs_new(self, data: dict[str, str]) -> str | None:
        try:
            cert = pki.load_cert(base64.b64decode(data["tls.crt"]))
        except (KeyError, ValueError):
            return "no usable certificate"
        if self.dns_name not in pki.dns_names(cert):
            return f"certificate is not for {self.dns_name}"
        if pki.valid_for(cert, datetime.datetime.now(datetime.UTC)) < RENEW_BEFORE:
            return "certificate expires within 30 days"
        return None

    async def ensure(self, may_rotate: bool) -> None:
        """Make the Secret, the caBundle and the loaded TLS context agree; rotate if due."""
        ns, name = self._settings.namespace, self._settings.webhook_secret
        try:
            secret: k8s.Obj | None = await self._client.get(k8s.SECRETS, name, ns)
        except k8s.ApiError as e:
            if not e.not_found:
                raise
            secret = None
        if secret is None:
            body = {
                "metadata": {"name": name, "namespace": ns},
                "type": "kubernetes.io/tls",
                "data": self._issue(b""),
            }
            try:
                secret = await self._client.create(k8s.SECRETS, body, ns)
                log.info("created webhook certificate for %s", self.dns_name)
            except k8s.ApiError as e:
                if not e.conflict:
                    raise
                secret = await self._client.get(k8s.SECRETS, name, ns)
        data: dict[str, str] = secret.get("data") or {}
        why = self._needs_new(data)
        if why and may_rotate:
            bundle = base64.b64decode(data.get("ca.crt", ""))
            secret = await self._client.replace(
                k8s.SECRETS, {**secret, "data": self._issue(bundle)}, ns
            )
            data = secret.get("data") or {}
            log.info("rotated webhook certificate (%s)", why)
        published = await self._publish_bundle(base64.b64decode(data.get("ca.crt", "")))
        self._load(data)
        self.untrusted = self._trust_problem(published, base64.b64decode(data["tls.crt"]))

    def _trust_problem(self, published: list[bytes] | None, served: bytes) -> str | None:
        name = self._settings.webhook_configuration
        if published is None:
            return f"ValidatingWebhookConfiguration {name} not found"
        cert = pki.load_cert(served)
        for bundle in published:
            try:
                cas = pki.load_certs(bundle)
            except ValueError:
                cas = []
            if not pki.issued_by_any(cert, cas):
                return f"the caBundle of {name} does not trust this replica's certificate yet"
        return None

    async def _publish_bundle(self, bundle: bytes) -> list[bytes] | None:
        """Make every webhook's caBundle `bundle` (when it does not already trust the CA of our
        Secret); return the bundles published, or None when the configuration is missing."""
        name = self._settings.webhook_configuration
        try:
            current = await self._client.get(k8s.VALIDATING_WEBHOOKS, name)
        except k8s.ApiError as e:
            if e.not_found:
                log.warning(
                    "ValidatingWebhookConfiguration %s not found: configuration is "
                    "not validated before it is stored",
                    name,
                )
                return None
            raise
        webhooks = current.get("webhooks") or []
        wanted = _b64(bundle)
        shown = [str((w.get("clientConfig") or {}).get("caBundle") or "") for w in webhooks]
        if all(b == wanted for b in shown):
            return [base64.b64decode(b) for b in shown]
        patch = [
            {"op": "replace", "path": f"/webhooks/{i}/clientConfig/caBundle", "value": wanted}
            for i in range(len(webhooks))
        ]
        updated = await self._client.patch(k8s.VALIDATING_WEBHOOKS, name, patch, patch_type="json")
        log.info("published the webhook CA bundle to %s", name)
        return [
            base64.b64decode(str((w.get("clientConfig") or {}).get("caBundle") or ""))
            for w in updated.get("webhooks") or []
        ]

    def _load(self, data: dict[str, str]) -> None:
        cert, key = base64.b64decode(data["tls.crt"]), base64.b64decode(data["tls.key"])
        if cert + key == self._loaded:
            return
        (self._dir / "tls.crt").write_bytes(cert)
        key_path = self._dir / "tls.key"
        key_path.touch(0o600)
        key_path.write_bytes(key)
        self.context.load_cert_chain(self._dir / "tls.crt", key_path)
        self._loaded = cert + key

    async def keep_current(self, is_leader: Callable[[], bool], interval: float = 60.0) -> None:
        while True:
            try:
                await self.ensure(may_rotate=is_leader())
            except (k8s.ApiError, k8s.Unreachable) as e:
                log.warning("webhook certificate check failed: %s", e)
            await asyncio.sleep(interval if self.untrusted is None else UNTRUSTED_RECHECK)


class Admission:
    """The HTTP handler: AdmissionReview in, AdmissionReview out."""

    def __init__(
        self, current: Callable[[], list[config.ConfigKind]], settings: settings_.Settings
    ) -> None:
        self._current = current
        self._namespace = settings.namespace

    def answer(self, review: k8s.Obj) -> k8s.Obj:
        request = review.get("request") or {}
        kind = str((request.get("kind") or {}).get("kind", ""))
        operation = str(request.get("operation", ""))
        verdict = admission.review(
            self._current(),
            operation,
            request.get("object"),
            kind=kind,
            name=str(request.get("name", "")),
            namespace=str(request.get("namespace", "")),
            expected_namespace=self._namespace,
        )
        metrics.WEBHOOK_REVIEWS.labels(kind, operation, str(verdict.allowed).lower()).inc()
        response: k8s.Obj = {"uid": request.get("uid", ""), "allowed": verdict.allowed}
        if not verdict.allowed:
            response["status"] = {"code": 403, "reason": "Forbidden", "message": verdict.message}
            log.info(
                "refused %s %s %s/%s: %s",
                operation,
                kind,
                request.get("namespace"),
                request.get("name"),
                verdict.message,
            )
        if verdict.warnings:
            response["warnings"] = list(verdict.warnings)
        return {
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "response": response,
        }

    async def handle(self, req: serving.Request) -> serving.Response:
        if req.method != "POST":
            return serving.Response(405, b"POST an AdmissionReview\n")
        try:
            review = json.loads(req.body)
        except ValueError:
            return serving.Response(400, b"not JSON\n")
        if not isinstance(review, dict):
            return serving.Response(400, b"not an AdmissionReview\n")
        body = json.dumps(self.answer(review)).encode()
        return serving.Response(200, body, "application/json")
