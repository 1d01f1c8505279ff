"""Every metallb.io manifest in the users' field notes (`../shared/seeds`, or the repository's
copy of them when the seeds are not beside it) must parse."""

import copy
from typing import Any

import pytest

from ironlb.core import config
from support import seeds

DOCUMENTS = seeds.seed_documents()


def test_there_are_manifests_and_the_copy_matches_the_seeds() -> None:
    assert len(DOCUMENTS) >= 3
    if seeds.SEEDS.is_dir():
        assert seeds.copied_documents() == seeds.from_seeds(), (
            f"{seeds.COPY} differs from {seeds.SEEDS}: regenerate it from the seeds"
        )


@pytest.mark.parametrize(("where", "document"), DOCUMENTS, ids=[w for w, _ in DOCUMENTS])
def test_every_seed_manifest_parses(where: str, document: dict[str, Any]) -> None:
    parsed = config.parse(document)
    assert parsed.name == document["metadata"]["name"]


def test_seed_pools_are_rejected_once_broken() -> None:
    pools = [d for _, d in DOCUMENTS if d["kind"] == "IPAddressPool"]
    assert pools, "the seeds contain at least one IPAddressPool"
    for document in pools:
        name = f"IPAddressPool {document['metadata']['namespace']}/{document['metadata']['name']}"

        reversed_range = copy.deepcopy(document)
        reversed_range["spec"]["addresses"] = ["10.0.0.9-10.0.0.1"]
        with pytest.raises(config.ConfigError) as info:
            config.parse(reversed_range)
        assert str(info.value) == (
            f"{name}: spec.addresses[0]: '10.0.0.9-10.0.0.1' is not a valid range (start after end)"
        )

        unknown = copy.deepcopy(document)
        unknown["spec"]["autoassign"] = True
        with pytest.raises(config.ConfigError, match=r"spec\.autoassign: unknown field"):
            config.parse(unknown)

        negative = copy.deepcopy(document)
        negative["spec"]["serviceAllocation"] = {"priority": -1}
        with pytest.raises(config.ConfigError, match=r"spec\.serviceAllocation\.priority"):
            config.parse(negative)


def test_extraction_copes_with_prose_and_transcripts() -> None:
    text = """Some prose mentioning apiVersion: metallb.io/v1beta1 inline.

```bash
$ cat tmp.yaml
apiVersion: metallb.io/v1beta1
kind: L2Advertisement
metadata:
  name: primary
  namespace: metallb

$ sudo kubectl apply -f tmp.yaml
l2advertisement.metallb.io/primary created
```

```yaml
kind: IPAddressPool
apiVersion: metallb.io/v1beta1
metadata:
  name: lan
spec:
  addresses:
  - 192.0.2.10-192.0.2.20
---
apiVersion: v1
kind: Service
```

    apiVersion: metallb.io/v1beta1
    kind: BFDProfile
    metadata:
      name: indented
"""
    documents = seeds.metallb_documents(text)
    assert [d["kind"] for d in documents] == ["L2Advertisement", "IPAddressPool", "BFDProfile"]
    assert documents[1]["spec"]["addresses"] == ["192.0.2.10-192.0.2.20"]
    for document in documents:
        config.parse(document)
