"""Settings from the environment, every name prefixed ``BACKLANE_``.

Read once at start-up into an immutable ``Settings``; tests build their own with ``Settings.from_env(env)``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

from .prices import PricesError, PriceTable, shipped
from .prices import load as load_prices
from .resources import ResourceLimit, ResourcesError
from .resources import parse as parse_resources
from .sentinel import SentinelUrlError, is_sentinel_url, parse_sentinel_url
from .shards import MAX_SHARDS
from .webhook_signing import SCHEDULE_S, secret_key
from .webhook_targets import RefusedTarget, check_literal

PREFIX = "BACKLANE_"
#: the longest Redis outage a worker may be told to ride through: its attempts wait that long, unseen
MAX_OUTAGE_S = 3600
#: more replicas than any real deployment keeps: a typo, not a wish
MAX_REPLICAS = 16
T = TypeVar("T")


class SettingsError(ValueError):
    """An environment variable has a value that cannot be used."""


def _parse_pairs(raw: str, what: str) -> list[tuple[str, str]]:
    """``a:x,b:y`` → [("a", "x"), ("b", "y")]; the value may itself contain ':'."""
    pairs: list[tuple[str, str]] = []
    for item in filter(None, (part.strip() for part in raw.split(","))):
        left, sep, right = item.partition(":")
        if not sep or not left or not right:
            raise SettingsError(f"{what}: expected 'name:value' items separated by commas, got {item!r}")
        pairs.append((left, right))
    return pairs


def _flag(raw: str) -> bool:
    value = raw.strip().lower()
    if value not in ("0", "1", "true", "false"):
        raise ValueError("expected 0, 1, true or false")
    return value in ("1", "true")


def _floats(raw: str) -> tuple[float, ...]:
    values = tuple(float(part) for part in raw.split(",") if part.strip())
    if not values or any(v < 0 for v in values):
        raise ValueError("expected a comma-separated list of non-negative seconds")
    return values


def _otlp_traces_endpoint(env: Mapping[str, str]) -> str | None:
    if env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        return env["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"]
    base = env.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    return base.rstrip("/") + "/v1/traces" if base else None


@dataclass(frozen=True)
class Settings:
    redis_url: str | None = None
    #: api key → tenant
    api_keys: dict[str, str] = field(default_factory=dict)
    host: str = "127.0.0.1"
    port: int = 8000
    #: processes `backlane api` runs behind its one port (backlane/api_processes.py)
    api_workers: int = 1
    key_prefix: str = "bl"
    #: hash-tagged shards the keys are spread over (None: 1 on a single Redis, 12 on a Cluster);
    #: fixed for the life of the data
    shards: int | None = None
    #: a worker process beats this often (shared/liveness.py) ...
    heartbeat_s: float = 1.0
    #: ... and its jobs are taken over this long after its last beat: a stall of lease_s - heartbeat_s
    #: (3 s by default) is outlived, a kill -9 is noticed within lease_s
    lease_s: float = 4.0
    supervisor_interval_s: float = 1.0
    retention_s: int = 7 * 24 * 3600
    max_body_bytes: int = 1_048_576
    events_token_ttl_s: int = 3600
    keepalive_s: float = 15.0
    #: event streams one tenant may hold open on one API process at once (more: 429)
    sse_max_per_tenant: int = 1000
    worker_concurrency: int = 4
    drain_grace_s: float = 10.0
    redis_max_connections: int = 16
    #: a worker keeps its attempts through a Redis outage this long (shared/ride_through.py); 0: it
    #: fails them once redis-py's own retry (about 1.5 s) gives up
    redis_outage_s: float = 30.0
    #: a create or a status change is acknowledged only once this many replicas have it (WAIT); 0: at once
    redis_min_replicas: int = 0
    #: how long that WAIT may take before the API answers 503 (docs/scaling.md, "Failover")
    redis_replica_wait_ms: int = 1000
    sse_client_queue: int = 1024
    hub_keys_per_reader: int = 256
    #: job creations per tenant per minute (POST /v1/jobs and retries); 429 above
    create_rate_per_min: int = 600
    #: queued jobs a tenant may have of one job type (0: no cap); a create over it is a 429
    max_queued_per_tenant: int = 0
    #: the longest ``Prefer: wait=N`` a create may ask for (it holds the request open that long)
    max_wait_s: int = 60
    #: secret for the per-job events tokens; unset → one shared secret is kept in Redis
    token_secret: str | None = None
    default_max_attempts: int = 3
    #: a provider's Retry-After longer than this is clamped to it (a date in 2099 parks no job)
    max_retry_after_s: float = 3600.0
    #: tenant → whsec_ secret; "*" is the fallback for every tenant
    webhook_secrets: dict[str, str] = field(default_factory=dict)
    #: tenant → webhook URL used when a job names none
    tenant_webhook_urls: dict[str, str] = field(default_factory=dict)
    #: seconds before the 1st, 2nd, … retry of a failed delivery; after the last one it is given up
    webhook_schedule_s: tuple[float, ...] = SCHEDULE_S
    webhook_timeout_s: float = 10.0
    webhook_concurrency: int = 16
    #: send webhooks to loopback, private, link-local (metadata) … addresses too (shared/webhook_targets.py)
    webhook_allow_private: bool = False
    #: OpenAI lane: the upstream's base URL (None → the SDK's default, api.openai.com)
    openai_base_url: str | None = None
    #: BACKLANE_OPENAI_API_KEY, else the SDK's own OPENAI_API_KEY
    openai_api_key: str | None = None
    #: verifies POST /v1/webhooks/openai: BACKLANE_OPENAI_WEBHOOK_SECRET, else OPENAI_WEBHOOK_SECRET
    openai_webhook_secret: str | None = None
    #: a background response still queued after this long is cancelled and submitted again
    openai_queued_timeout_s: float = 600.0
    #: whether the upstream has background mode: auto (try it, fall back when refused), on, off
    openai_background: str = "auto"
    #: what model tokens cost: the shipped table, overlaid by the file BACKLANE_PRICES names
    prices: PriceTable = field(default_factory=shipped)
    #: where workers export traces over OTLP/HTTP: the OpenTelemetry SDK's OTEL_EXPORTER_OTLP_TRACES_ENDPOINT,
    #: else its OTEL_EXPORTER_OTLP_ENDPOINT + /v1/traces; None: no export
    otlp_endpoint: str | None = None
    #: named resources and their limits (shared/resources.py): BACKLANE_RESOURCES, JSON or @file.json
    resources: dict[str, ResourceLimit] = field(default_factory=dict)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env

        def get(name: str, cast: Callable[[str], T], default: T) -> T:
            raw = env.get(PREFIX + name)
            if raw is None or raw == "":
                return default
            try:
                return cast(raw)
            except ValueError as exc:
                raise SettingsError(f"{PREFIX}{name}={raw!r}: {exc}") from None

        keys = {key: tenant for tenant, key in _parse_pairs(env.get(PREFIX + "API_KEYS", ""), "API_KEYS")}
        secrets = dict(_parse_pairs(env.get(PREFIX + "WEBHOOK_SECRETS", ""), "WEBHOOK_SECRETS"))
        if env.get(PREFIX + "WEBHOOK_SECRET"):
            secrets["*"] = env[PREFIX + "WEBHOOK_SECRET"]
        d = cls()
        try:
            prices = load_prices(env.get(PREFIX + "PRICES") or None)
        except PricesError as exc:
            raise SettingsError(f"{PREFIX}PRICES: {exc}") from None
        try:
            resources = parse_resources(env.get(PREFIX + "RESOURCES", ""))
        except ResourcesError as exc:
            raise SettingsError(f"{PREFIX}RESOURCES: {exc}") from None
        settings = cls(
            redis_url=env.get(PREFIX + "REDIS_URL") or None,
            api_keys=keys,
            host=get("HOST", str, d.host),
            port=get("PORT", int, d.port),
            api_workers=get("API_WORKERS", int, d.api_workers),
            key_prefix=get("KEY_PREFIX", str, d.key_prefix),
            shards=get("SHARDS", int, None),
            heartbeat_s=get("HEARTBEAT_S", float, d.heartbeat_s),
            lease_s=get("LEASE_S", float, d.lease_s),
            supervisor_interval_s=get("SUPERVISOR_INTERVAL_S", float, d.supervisor_interval_s),
            retention_s=get("RETENTION_S", int, d.retention_s),
            max_body_bytes=get("MAX_BODY_BYTES", int, d.max_body_bytes),
            events_token_ttl_s=get("EVENTS_TOKEN_TTL_S", int, d.events_token_ttl_s),
            keepalive_s=get("KEEPALIVE_S", float, d.keepalive_s),
            sse_max_per_tenant=get("SSE_MAX_PER_TENANT", int, d.sse_max_per_tenant),
            worker_concurrency=get("WORKER_CONCURRENCY", int, d.worker_concurrency),
            drain_grace_s=get("DRAIN_GRACE_S", float, d.drain_grace_s),
            redis_max_connections=get("REDIS_MAX_CONNECTIONS", int, d.redis_max_connections),
            redis_outage_s=get("REDIS_OUTAGE_S", float, d.redis_outage_s),
            redis_min_replicas=get("REDIS_MIN_REPLICAS", int, d.redis_min_replicas),
            redis_replica_wait_ms=get("REDIS_REPLICA_WAIT_MS", int, d.redis_replica_wait_ms),
            sse_client_queue=get("SSE_CLIENT_QUEUE", int, d.sse_client_queue),
            hub_keys_per_reader=get("HUB_KEYS_PER_READER", int, d.hub_keys_per_reader),
            create_rate_per_min=get("CREATE_RATE_PER_MIN", int, d.create_rate_per_min),
            max_queued_per_tenant=get("MAX_QUEUED_PER_TENANT", int, d.max_queued_per_tenant),
            max_wait_s=get("MAX_WAIT_S", int, d.max_wait_s),
            token_secret=env.get(PREFIX + "TOKEN_SECRET") or None,
            default_max_attempts=get("DEFAULT_MAX_ATTEMPTS", int, d.default_max_attempts),
            max_retry_after_s=get("MAX_RETRY_AFTER_S", float, d.max_retry_after_s),
            webhook_secrets=secrets,
            tenant_webhook_urls=dict(_parse_pairs(env.get(PREFIX + "TENANT_WEBHOOK_URLS", ""), "TENANT_WEBHOOK_URLS")),
            webhook_schedule_s=get("WEBHOOK_SCHEDULE_S", _floats, d.webhook_schedule_s),
            webhook_timeout_s=get("WEBHOOK_TIMEOUT_S", float, d.webhook_timeout_s),
            webhook_concurrency=get("WEBHOOK_CONCURRENCY", int, d.webhook_concurrency),
            webhook_allow_private=get("WEBHOOK_ALLOW_PRIVATE", _flag, d.webhook_allow_private),
            openai_base_url=env.get(PREFIX + "OPENAI_BASE_URL") or None,
            openai_api_key=env.get(PREFIX + "OPENAI_API_KEY") or env.get("OPENAI_API_KEY") or None,
            openai_webhook_secret=(
                env.get(PREFIX + "OPENAI_WEBHOOK_SECRET") or env.get("OPENAI_WEBHOOK_SECRET") or None
            ),
            openai_queued_timeout_s=get("OPENAI_QUEUED_TIMEOUT_S", float, d.openai_queued_timeout_s),
            openai_background=get("OPENAI_BACKGROUND", str, d.openai_background),
            prices=prices,
            otlp_endpoint=_otlp_traces_endpoint(env),
            resources=resources,
        )
        settings.validate()
        return settings

    def validate(self) -> None:
        if self.heartbeat_s <= 0 or self.lease_s <= self.heartbeat_s:
            raise SettingsError("LEASE_S must be greater than HEARTBEAT_S, and both positive")
        if self.shards is not None and not 1 <= self.shards <= MAX_SHARDS:
            raise SettingsError(f"SHARDS must be between 1 and {MAX_SHARDS}, got {self.shards}")
        if self.api_workers < 1:
            raise SettingsError(f"{PREFIX}API_WORKERS must be at least 1, got {self.api_workers}")
        if self.max_queued_per_tenant < 0:
            raise SettingsError(
                f"{PREFIX}MAX_QUEUED_PER_TENANT must be 0 (no cap) or more, got {self.max_queued_per_tenant}")
        if self.worker_concurrency < 1:
            raise SettingsError("WORKER_CONCURRENCY must be at least 1")
        if self.redis_max_connections < 4:
            raise SettingsError("REDIS_MAX_CONNECTIONS must be at least 4")
        if not 0 <= self.redis_outage_s <= MAX_OUTAGE_S:  # also refuses nan and inf
            raise SettingsError(
                f"REDIS_OUTAGE_S must be between 0 and {MAX_OUTAGE_S} seconds, got {self.redis_outage_s}")
        if not 0 <= self.redis_min_replicas <= MAX_REPLICAS:
            raise SettingsError(
                f"REDIS_MIN_REPLICAS must be between 0 and {MAX_REPLICAS}, got {self.redis_min_replicas}")
        if not 1 <= self.redis_replica_wait_ms <= 60_000:  # WAIT 0 would wait forever
            raise SettingsError(f"REDIS_REPLICA_WAIT_MS must be between 1 and 60000, got {self.redis_replica_wait_ms}")
        if self.redis_url and is_sentinel_url(self.redis_url):
            try:
                parse_sentinel_url(self.redis_url)
            except SentinelUrlError as exc:
                raise SettingsError(f"{PREFIX}REDIS_URL: {exc}") from None
        if self.retention_s < 60:
            raise SettingsError("RETENTION_S must be at least 60")
        if self.openai_background not in ("auto", "on", "off"):
            raise SettingsError("OPENAI_BACKGROUND must be auto, on or off")
        if self.default_max_attempts < 1:
            raise SettingsError("DEFAULT_MAX_ATTEMPTS must be at least 1")
        if self.webhook_concurrency < 1:
            raise SettingsError("WEBHOOK_CONCURRENCY must be at least 1")
        if self.sse_max_per_tenant < 1:
            raise SettingsError("SSE_MAX_PER_TENANT must be at least 1")
        if not 1 <= self.max_wait_s <= 600:
            raise SettingsError("MAX_WAIT_S must be from 1 to 600 seconds")
        if self.max_retry_after_s < 0:
            raise SettingsError("MAX_RETRY_AFTER_S must not be negative")
        for tenant, secret in self.webhook_secrets.items():
            try:
                secret_key(secret)
            except ValueError as exc:
                name = "WEBHOOK_SECRET" if tenant == "*" else f"WEBHOOK_SECRETS (tenant {tenant!r})"
                raise SettingsError(f"{PREFIX}{name}: {exc}") from None
        for tenant, url in self.tenant_webhook_urls.items():
            try:  # a name is resolved when a job is delivered, not here: start-up does not wait on DNS
                check_literal(url, allow_private=self.webhook_allow_private)
            except RefusedTarget as exc:
                raise SettingsError(f"{PREFIX}TENANT_WEBHOOK_URLS (tenant {tenant!r}): {exc}") from None
        unsigned = sorted(t for t in self.tenant_webhook_urls if self.webhook_secret(t) is None)
        if unsigned:
            raise SettingsError(
                f"{PREFIX}TENANT_WEBHOOK_URLS names {', '.join(map(repr, unsigned))} without a webhook secret: "
                f"every delivery is signed, so set {PREFIX}WEBHOOK_SECRETS=<tenant>:whsec_... "
                f"or {PREFIX}WEBHOOK_SECRET"
            )

    def webhook_secret(self, tenant: str) -> str | None:
        """The secret that signs the tenant's webhooks: its own, else the fallback, else None."""
        return self.webhook_secrets.get(tenant) or self.webhook_secrets.get("*")

    @property
    def lease_ms(self) -> int:
        return int(self.lease_s * 1000)
