"""The price table: the shipped figures, BACKLANE_PRICES overrides, and what has no price."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from shared.prices import load, shipped, usd
from shared.settings import Settings, SettingsError


def test_the_shipped_table_says_when_its_figures_were_taken() -> None:
    table = shipped()
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", table.taken or "")
    assert table.batch_discount == 0.5
    assert table.price("gpt-4o-mini") is not None


def test_a_call_is_priced_with_cached_input_at_its_own_rate_and_batch_at_the_discount() -> None:
    table = shipped()
    # gpt-4o-mini: 0.15 input, 0.075 cached, 0.6 output per 1M
    nusd = table.cost_nusd("gpt-4o-mini", input_tokens=1000, cached_tokens=200, output_tokens=100)
    assert nusd == round((800 * 0.15 + 200 * 0.075 + 100 * 0.6) * 1000) == 195_000
    assert usd(nusd) == 0.000195
    assert table.cost_nusd("gpt-4o-mini", input_tokens=1000, cached_tokens=200, output_tokens=100,
                           batch=True) == 97_500


def test_a_dated_snapshot_takes_its_model_s_price_and_an_unknown_model_has_none() -> None:
    table = shipped()
    assert table.price("gpt-4o-2024-08-06") == table.price("gpt-4o")
    assert table.price("gpt-4o-latest") is None
    assert table.cost_nusd("my-local-llama", input_tokens=10, cached_tokens=0, output_tokens=10) is None


def test_backlane_prices_overrides_and_adds_models(tmp_path: Path) -> None:
    path = tmp_path / "prices.json"
    path.write_text(json.dumps({"gpt-4o": {"input": 1, "cached_input": 0.5, "output": 2},
                                "my-llama": {"input": 0, "cached_input": 0, "output": 0.1}}))
    settings = Settings.from_env({"BACKLANE_PRICES": str(path)})
    assert settings.prices.price("gpt-4o") is not None and settings.prices.price("gpt-4o").input == 1  # type: ignore[union-attr]
    assert settings.prices.cost_nusd("my-llama", input_tokens=5, cached_tokens=0, output_tokens=1000) == 100_000
    assert settings.prices.price("gpt-4o-mini") == shipped().price("gpt-4o-mini")
    assert load(None) is shipped()


@pytest.mark.parametrize(("content", "named"), [
    ('{"gpt-4o": {"input": 1, "cached_input": 0.5}}', "gpt-4o.output"),
    ('{"gpt-4o": {"input": -1, "cached_input": 0.5, "output": 2}}', "gpt-4o.input"),
    ('{"gpt-4o": {"input": "1", "cached_input": 0.5, "output": 2}}', "gpt-4o.input"),
    ('{"gpt-4o": {"input": 1, "cached": 0.5, "cached_input": 0.5, "output": 2}}', "gpt-4o.cached"),
    ('{"gpt-4o": 3}', "gpt-4o"),
    ('[1, 2]', "expected an object of models"),
    ('{"gpt-4o": ', "not JSON"),
])
def test_a_bad_prices_file_stops_start_up_naming_the_field(tmp_path: Path, content: str, named: str) -> None:
    path = tmp_path / "prices.json"
    path.write_text(content)
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({"BACKLANE_PRICES": str(path)})
    assert "BACKLANE_PRICES" in str(caught.value) and named in str(caught.value)


def test_a_missing_prices_file_stops_start_up(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match=r"BACKLANE_PRICES.*cannot be read"):
        Settings.from_env({"BACKLANE_PRICES": str(tmp_path / "nope.json")})
