"""Network-namespace lab and the local kube-apiserver + etcd used by `ironlb lab` and tests."""
