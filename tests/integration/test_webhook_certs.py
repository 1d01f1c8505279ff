"""The admission webhook's certificate against the real API server: created when missing, kept
while valid, rotated by the leader before it expires, with the old CA still trusted meanwhile."""

from __future__ import annotations

import base64
import datetime

import pytest

from ironlb.controller import settings as controller_settings
from ironlb.controller import webhook
from ironlb.core import pki
from ironlb.k8s import client as k8s

pytestmark = pytest.mark.integration


async def test_certificate_is_created_published_kept_and_rotated_by_the_leader(
    admin: k8s.Client, namespace: str
) -> None:
    config_name = f"ironlb-webhook-{namespace}"
    await admin.create(
        k8s.VALIDATING_WEBHOOKS,
        {
            "metadata": {"name": config_name},
            "webhooks": [
                {
                    "name": "config.ironlb.io",
                    "admissionReviewVersions": ["v1"],
                    "sideEffects": "None",
                    "clientConfig": {"service": {"name": "svc", "namespace": namespace}},
                    "rules": [],
                }
            ],
        },
    )
    settings = controller_settings.Settings(
        namespace=namespace,
        webhook_service="svc",
        webhook_secret="cert",
        webhook_configuration=config_name,
    )
    certs = webhook.Certificates(admin, settings)
    try:
        await _create_keep_rotate(admin, certs, settings, namespace, config_name)
    finally:
        certs.close()
    await admin.delete(k8s.VALIDATING_WEBHOOKS, config_name)


async def _create_keep_rotate(
    admin: k8s.Client,
    certs: webhook.Certificates,
    settings: controller_settings.Settings,
    namespace: str,
    config_name: str,
) -> None:
    """The steps of the test above, with `certs` closed by it whatever happens."""

    async def current() -> tuple[k8s.Obj, bytes]:
        secret = await admin.get(k8s.SECRETS, "cert", namespace)
        hook = await admin.get(k8s.VALIDATING_WEBHOOKS, config_name)
        return secret, base64.b64decode(hook["webhooks"][0]["clientConfig"]["caBundle"])

    await certs.ensure(may_rotate=False)
    secret, bundle = await current()
    cert = pki.load_cert(base64.b64decode(secret["data"]["tls.crt"]))
    assert pki.dns_names(cert) == [f"svc.{namespace}.svc", f"svc.{namespace}.svc.cluster.local"]
    assert bundle == base64.b64decode(secret["data"]["ca.crt"])
    assert len(pki.load_certs(bundle)) == 1

    # Another replica, or a restart: the valid certificate is kept.
    other = webhook.Certificates(admin, settings)
    try:
        await other.ensure(may_rotate=True)
    finally:
        other.close()
    assert (await current())[0]["data"] == secret["data"]

    # Ten days from expiry: a non-leader leaves it alone, the leader rotates it.
    ca = pki.CertificateAuthority.create("old-ca")
    old, key = ca.issue(f"svc.{namespace}.svc", dns=(f"svc.{namespace}.svc",), server=True, days=10)
    secret["data"] = {
        "ca.crt": base64.b64encode(pki.pem_cert(ca.cert)).decode(),
        "tls.crt": base64.b64encode(pki.pem_cert(old)).decode(),
        "tls.key": base64.b64encode(pki.pem_key(key)).decode(),
    }
    await admin.replace(k8s.SECRETS, secret, namespace)
    await certs.ensure(may_rotate=False)
    assert (await current())[0]["data"]["tls.crt"] == secret["data"]["tls.crt"]
    await certs.ensure(may_rotate=True)
    rotated, bundle = await current()
    new = pki.load_cert(base64.b64decode(rotated["data"]["tls.crt"]))
    assert pki.valid_for(new, datetime.datetime.now(datetime.UTC)).days > 300
    # The API server trusts both CAs while replicas still serve the old certificate.
    subjects = {c.subject.rfc4514_string() for c in pki.load_certs(bundle)}
    assert subjects == {"CN=old-ca", "CN=ironlb-webhook-ca"}
