from ironlb.core import pki


def test_a_certificate_is_trusted_only_by_a_bundle_holding_its_issuer() -> None:
    ca = pki.CertificateAuthority.create("ca")
    other = pki.CertificateAuthority.create("other")
    cert, _ = ca.issue("svc.ns.svc", dns=("svc.ns.svc",), server=True, days=1)
    assert pki.issued_by_any(cert, [ca.cert])
    assert pki.issued_by_any(cert, [other.cert, ca.cert])  # a bundle during rotation
    assert not pki.issued_by_any(cert, [other.cert])
    assert not pki.issued_by_any(cert, [])
