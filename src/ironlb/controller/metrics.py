"""Controller metrics: MetalLB's names (users' dashboards use them) plus ironlb's own."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

POOL = ["pool"]
ADDRESSES_TOTAL = Gauge(
    "metallb_allocator_addresses_total", "Number of usable IP addresses, per pool", POOL
)
ADDRESSES_IN_USE = Gauge(
    "metallb_allocator_addresses_in_use_total", "Number of IP addresses in use, per pool", POOL
)
IPV4_TOTAL = Gauge(
    "metallb_allocator_ipv4_addresses_total", "Number of usable IPv4 addresses, per pool", POOL
)
IPV4_IN_USE = Gauge(
    "metallb_allocator_ipv4_addresses_in_use_total",
    "Number of IPv4 addresses in use, per pool",
    POOL,
)
IPV6_TOTAL = Gauge(
    "metallb_allocator_ipv6_addresses_total", "Number of usable IPv6 addresses, per pool", POOL
)
IPV6_IN_USE = Gauge(
    "metallb_allocator_ipv6_addresses_in_use_total",
    "Number of IPv6 addresses in use, per pool",
    POOL,
)
CONFIG_LOADED = Gauge(
    "metallb_k8s_client_config_loaded_bool", "1 if a configuration has been loaded (maybe stale)"
)
CONFIG_STALE = Gauge(
    "metallb_k8s_client_config_stale_bool",
    "1 if the configuration in force is not the latest (the latest is invalid)",
)
UPDATES = Counter("metallb_k8s_client_updates", "Number of k8s object updates processed")
UPDATE_ERRORS = Counter(
    "metallb_k8s_client_update_errors", "Number of k8s object updates that failed"
)

ALLOCATION_LATENCY = Histogram(
    "ironlb_allocation_latency_seconds",
    "From a Service needing addresses being seen to its status being written",
    buckets=(0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10),
)
RECONCILE_ERRORS = Counter(
    "ironlb_reconcile_errors", "Reconciles that failed and were retried", ["reason"]
)
ALLOCATION_FAILURES = Counter(
    "ironlb_allocation_failures", "Services that could not get an address"
)
IS_LEADER = Gauge("ironlb_controller_leader_bool", "1 while this replica is the leader")
WEBHOOK_REVIEWS = Counter(
    "ironlb_webhook_reviews", "Admission reviews answered", ["kind", "operation", "allowed"]
)
