from __future__ import annotations

from api.events_tokens import check_events_token, events_token
from shared.ids import is_job_id
from shared.shards import new_job_id, shard_of


def test_job_ids_are_128_bit_hex_unique_and_say_their_shard() -> None:
    for n in (1, 3, 12, 256):
        made = [(shard, new_job_id(shard, n)) for shard in range(n) for _ in range(50)]
        assert len({i for _, i in made}) == len(made)
        assert all(is_job_id(i) and len(i) == 32 and shard_of(i, n) == shard for shard, i in made)
    assert not is_job_id("../etc") and not is_job_id("A" * 32)


def test_events_token_is_scoped_to_one_job_and_expires() -> None:
    secret = b"s"
    token = events_token(secret, "acme", "a" * 32, expires_s=1000)
    assert check_events_token(secret, token, "a" * 32, now_s=999) == "acme"
    assert check_events_token(secret, token, "b" * 32, now_s=999) is None  # another job
    assert check_events_token(secret, token, "a" * 32, now_s=1001) is None  # expired
    assert check_events_token(b"other", token, "a" * 32, now_s=999) is None  # forged
    tampered = token.replace("acme", "evil")
    assert check_events_token(secret, tampered, "a" * 32, now_s=999) is None
    assert check_events_token(secret, "garbage", "a" * 32, now_s=0) is None
