"""The production clients pointed at a sandbox (make prod-up, the daily-refresh benchmark): its
address and pace come from the environment, and the real marketplaces are never sped up."""

import pytest

from resources import MARKETPLACE_BASE_URL_VAR, MARKETPLACE_RATE_SPEEDUP_VAR, production_clients


def test_clients_call_the_sandbox_at_its_speed(monkeypatch):
    monkeypatch.setenv(MARKETPLACE_BASE_URL_VAR, "http://127.0.0.1:8770/")
    monkeypatch.setenv(MARKETPLACE_RATE_SPEEDUP_VAR, "60")
    clients = production_clients()
    assert clients["amazon"].endpoint == "http://127.0.0.1:8770/amazon"
    assert clients["ebay"].token_url == "http://127.0.0.1:8770/ebay/identity/v1/oauth2/token"
    assert clients["walmart"].endpoint == "http://127.0.0.1:8770/walmart"
    assert {c.rate_speedup for c in clients.values()} == {60.0}


def test_the_real_marketplaces_are_paced_at_their_documented_rates(monkeypatch):
    monkeypatch.delenv(MARKETPLACE_BASE_URL_VAR, raising=False)
    monkeypatch.delenv(MARKETPLACE_RATE_SPEEDUP_VAR, raising=False)
    clients = production_clients()
    assert clients["amazon"].endpoint.startswith("https://") and clients["amazon"].rate_speedup == 1.0
    monkeypatch.setenv(MARKETPLACE_RATE_SPEEDUP_VAR, "60")
    with pytest.raises(ValueError, match="for a sandbox only"):
        production_clients()


@pytest.mark.parametrize("bad", ["fast", "0.5", "nan", "-3"])
def test_a_bad_speedup_is_refused(monkeypatch, bad):
    monkeypatch.setenv(MARKETPLACE_BASE_URL_VAR, "http://127.0.0.1:8770")
    monkeypatch.setenv(MARKETPLACE_RATE_SPEEDUP_VAR, bad)
    with pytest.raises(ValueError, match="must be a number >= 1"):
        production_clients()
