from __future__ import annotations

import pytest

from shared.settings import Settings, SettingsError


def test_defaults_follow_the_spec() -> None:
    s = Settings.from_env({})
    assert (s.heartbeat_s, s.lease_s, s.retention_s, s.keepalive_s) == (2.0, 10.0, 7 * 24 * 3600, 15.0)
    assert s.redis_url is None and s.api_keys == {}


def test_api_keys_map_key_to_tenant_and_allow_several_keys_per_tenant() -> None:
    s = Settings.from_env({"BACKLANE_API_KEYS": "acme:k1, acme:k2,globex:k:3"})
    assert s.api_keys == {"k1": "acme", "k2": "acme", "k:3": "globex"}


def test_webhook_secrets_per_tenant_and_fallback() -> None:
    s = Settings.from_env({"BACKLANE_WEBHOOK_SECRETS": "acme:whsec_a", "BACKLANE_WEBHOOK_SECRET": "whsec_all"})
    assert s.webhook_secrets == {"acme": "whsec_a", "*": "whsec_all"}


@pytest.mark.parametrize(
    "env, message",
    [
        ({"BACKLANE_PORT": "eighty"}, "BACKLANE_PORT"),
        ({"BACKLANE_API_KEYS": "no-colon"}, "API_KEYS"),
        ({"BACKLANE_HEARTBEAT_S": "5", "BACKLANE_LEASE_S": "4"}, "LEASE_S"),
        ({"BACKLANE_WORKER_CONCURRENCY": "0"}, "WORKER_CONCURRENCY"),
    ],
)
def test_bad_values_are_named_in_the_error(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        Settings.from_env(env)
