from __future__ import annotations

import pytest

from shared.settings import Settings, SettingsError


def test_defaults_follow_the_spec() -> None:
    s = Settings.from_env({})
    # heartbeat 1 s and lease 4 s, not the spec's 2 s and 10 s: a killed worker's jobs run again within 5 s
    assert (s.heartbeat_s, s.lease_s, s.retention_s, s.keepalive_s) == (1.0, 4.0, 7 * 24 * 3600, 15.0)
    assert s.redis_url is None and s.api_keys == {}
    assert s.api_workers == 1 and Settings.from_env({"BACKLANE_API_WORKERS": "3"}).api_workers == 3


def test_api_keys_map_key_to_tenant_and_allow_several_keys_per_tenant() -> None:
    s = Settings.from_env({"BACKLANE_API_KEYS": "acme:k1, acme:k2,globex:k:3"})
    assert s.api_keys == {"k1": "acme", "k2": "acme", "k:3": "globex"}


def test_webhook_secrets_per_tenant_and_fallback() -> None:
    s = Settings.from_env({"BACKLANE_WEBHOOK_SECRETS": "acme:whsec_YWNtZQ==", "BACKLANE_WEBHOOK_SECRET": "whsec_YWxs"})
    assert s.webhook_secrets == {"acme": "whsec_YWNtZQ==", "*": "whsec_YWxs"}
    assert s.webhook_secret("acme") == "whsec_YWNtZQ==" and s.webhook_secret("globex") == "whsec_YWxs"


@pytest.mark.parametrize(
    "env, message",
    [
        ({"BACKLANE_PORT": "eighty"}, "BACKLANE_PORT"),
        ({"BACKLANE_API_KEYS": "no-colon"}, "API_KEYS"),
        ({"BACKLANE_HEARTBEAT_S": "5", "BACKLANE_LEASE_S": "4"}, "LEASE_S"),
        ({"BACKLANE_WORKER_CONCURRENCY": "0"}, "WORKER_CONCURRENCY"),
        ({"BACKLANE_WEBHOOK_CONCURRENCY": "0"}, "WEBHOOK_CONCURRENCY"),
        ({"BACKLANE_MAX_RETRY_AFTER_S": "-1"}, "MAX_RETRY_AFTER_S"),
        ({"BACKLANE_SSE_MAX_PER_TENANT": "0"}, "SSE_MAX_PER_TENANT"),
        ({"BACKLANE_SSE_MAX_PER_TENANT": "many"}, "SSE_MAX_PER_TENANT"),
        ({"BACKLANE_API_WORKERS": "0"}, "BACKLANE_API_WORKERS must be at least 1, got 0"),
        ({"BACKLANE_API_WORKERS": "-2"}, "BACKLANE_API_WORKERS must be at least 1, got -2"),
        ({"BACKLANE_API_WORKERS": "x"}, "BACKLANE_API_WORKERS='x'"),
        ({"BACKLANE_API_WORKERS": "1.5"}, "BACKLANE_API_WORKERS='1.5'"),
        ({"BACKLANE_REDIS_OUTAGE_S": "-1"}, "REDIS_OUTAGE_S"),
        ({"BACKLANE_REDIS_OUTAGE_S": "nan"}, "REDIS_OUTAGE_S"),
        ({"BACKLANE_REDIS_OUTAGE_S": "1e9"}, "REDIS_OUTAGE_S"),
        ({"BACKLANE_REDIS_OUTAGE_S": "half a minute"}, "REDIS_OUTAGE_S"),
        ({"BACKLANE_REDIS_MIN_REPLICAS": "-1"}, "REDIS_MIN_REPLICAS"),
        ({"BACKLANE_REDIS_MIN_REPLICAS": "one"}, "REDIS_MIN_REPLICAS"),
        ({"BACKLANE_REDIS_MIN_REPLICAS": "99"}, "REDIS_MIN_REPLICAS"),
        ({"BACKLANE_REDIS_REPLICA_WAIT_MS": "0"}, "REDIS_REPLICA_WAIT_MS"),
        ({"BACKLANE_REDIS_URL": "redis+sentinel://s1:26379,s2:26379"}, "REDIS_URL: name the master's service"),
        ({"BACKLANE_REDIS_URL": "redis+sentinel://s1:263790/svc"}, "REDIS_URL: .*port must be a number"),
        ({"BACKLANE_REDIS_URL": "redis+sentinel://s1:1,,s2:2/svc"}, "REDIS_URL: a sentinel address is empty"),
        ({"BACKLANE_REDIS_URL": "redis+sentinel://s1:1/svc?timeout=3"}, "REDIS_URL: unknown option 'timeout'"),
        ({"BACKLANE_REDIS_URL": "redis+sentinel://:1/svc"}, "REDIS_URL: .*has no host"),
        ({"BACKLANE_MAX_QUEUED_PER_TENANT": "-1"}, r"MAX_QUEUED_PER_TENANT must be 0 \(no cap\) or more, got -1"),
        ({"BACKLANE_MAX_QUEUED_PER_TENANT": "lots"}, "BACKLANE_MAX_QUEUED_PER_TENANT='lots'"),
    ],
)
def test_bad_values_are_named_in_the_error(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        Settings.from_env(env)


def test_max_retry_after_has_a_default_and_reads_like_the_others() -> None:
    assert Settings.from_env({}).max_retry_after_s == 3600
    assert Settings.from_env({"BACKLANE_MAX_RETRY_AFTER_S": "90"}).max_retry_after_s == 90
    with pytest.raises(SettingsError, match="BACKLANE_MAX_RETRY_AFTER_S"):
        Settings.from_env({"BACKLANE_MAX_RETRY_AFTER_S": "an hour"})


@pytest.mark.parametrize("env", [
    {"BACKLANE_WEBHOOK_SECRET": "whsec_not base64!"},
    {"BACKLANE_WEBHOOK_SECRETS": "acme:whsec_abc"},  # base64 needs padding to a multiple of 4
    {"BACKLANE_WEBHOOK_SECRETS": "acme:whsec_"},
])
def test_a_malformed_whsec_secret_is_refused_at_load(env: dict[str, str]) -> None:
    """Bug: a whsec_ secret that is not base64 passed the settings and raised inside every delivery.
    Fix: it is checked when the settings load, and the message names the variable."""
    with pytest.raises(SettingsError, match=r"BACKLANE_WEBHOOK_SECRET.*(base64|must not be empty)"):
        Settings.from_env(env)


def test_a_tenant_webhook_url_without_a_secret_is_refused_at_load() -> None:
    """Bug: BACKLANE_TENANT_WEBHOOK_URLS for a tenant with no secret meant unsigned deliveries.
    Fix: every delivery is signed, so such settings do not load; the message names the fix."""
    with pytest.raises(SettingsError, match=r"'acme'.*BACKLANE_WEBHOOK_SECRETS"):
        Settings.from_env({"BACKLANE_TENANT_WEBHOOK_URLS": "acme:https://hooks.example/a"})
    signed = Settings.from_env({"BACKLANE_TENANT_WEBHOOK_URLS": "acme:https://hooks.example/a",
                                "BACKLANE_WEBHOOK_SECRETS": "acme:raw-secret-bytes"})
    assert signed.tenant_webhook_urls == {"acme": "https://hooks.example/a"}


@pytest.mark.parametrize(("raw", "allowed"), [("1", True), ("true", True), ("0", False), ("false", False), ("", False)])
def test_webhook_allow_private_is_a_flag(raw: str, allowed: bool) -> None:
    assert Settings.from_env({"BACKLANE_WEBHOOK_ALLOW_PRIVATE": raw}).webhook_allow_private is allowed


@pytest.mark.parametrize("raw", ["yes", "2", "on"])
def test_webhook_allow_private_refuses_other_values(raw: str) -> None:
    with pytest.raises(SettingsError, match=r"BACKLANE_WEBHOOK_ALLOW_PRIVATE.*0, 1, true or false"):
        Settings.from_env({"BACKLANE_WEBHOOK_ALLOW_PRIVATE": raw})


def test_a_private_tenant_webhook_url_stops_start_up_unless_allowed() -> None:
    env = {"BACKLANE_TENANT_WEBHOOK_URLS": "acme:http://169.254.169.254/hook", "BACKLANE_WEBHOOK_SECRET": "raw"}
    with pytest.raises(SettingsError, match=r"BACKLANE_TENANT_WEBHOOK_URLS \(tenant 'acme'\).*cloud metadata.*"
                                            r"BACKLANE_WEBHOOK_ALLOW_PRIVATE"):
        Settings.from_env(env)
    with pytest.raises(SettingsError, match=r"TENANT_WEBHOOK_URLS.*http:// or https://"):
        Settings.from_env({**env, "BACKLANE_TENANT_WEBHOOK_URLS": "acme:ftp://hooks.example/a"})
    allowed = {**env, "BACKLANE_WEBHOOK_ALLOW_PRIVATE": "1"}
    assert Settings.from_env(allowed).tenant_webhook_urls
    with pytest.raises(SettingsError, match=r"TENANT_WEBHOOK_URLS.*http:// or https://"):
        Settings.from_env({**allowed, "BACKLANE_TENANT_WEBHOOK_URLS": "acme:ftp://hooks.example/a"})


def test_a_sentinel_url_is_parsed_into_its_sentinels_and_service() -> None:
    from shared.sentinel import parse_sentinel_url

    parsed = parse_sentinel_url("redis+sentinel://:s%40cret@10.0.0.1:26380,[::1]:26381,s3/backlane?db=2")
    assert parsed.sentinels == (("10.0.0.1", 26380), ("::1", 26381), ("s3", 26379))
    assert (parsed.service, parsed.db, parsed.username, parsed.password) == ("backlane", 2, None, "s@cret")
    env = {"BACKLANE_REDIS_URL": "redis+sentinel://a:1,b:2/svc", "BACKLANE_REDIS_MIN_REPLICAS": "1"}
    settings = Settings.from_env(env)
    assert settings.redis_min_replicas == 1 and settings.redis_replica_wait_ms == 1000
