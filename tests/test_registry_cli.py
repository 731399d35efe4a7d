"""The merchant registry and the `illuma merchants` CLI, on both engines."""

import pytest

from illuma_pipelines.cli import main
from illuma_pipelines.registry import (
    ACTIVE,
    OFFBOARDED,
    ChannelConnection,
    RegistryError,
    add_merchant,
    get_merchant,
    list_merchants,
    offboard_merchant,
    resolve_credential,
)
from illuma_pipelines.warehouse import PLATFORM_SCHEMA


def test_add_list_offboard_round_trip(warehouse, merchant_id):
    mid = merchant_id()
    add_merchant(
        warehouse,
        mid,
        display_name="Acme Auto Parts",
        channels={
            "amazon": ChannelConnection("amazon", "env:AMAZON_REFRESH_ACME", ("ATVPDKIKX0DER",)),
            "ebay": ChannelConnection("ebay", f"sandbox:{mid}"),
        },
    )
    merchant = get_merchant(warehouse, mid)
    assert merchant.status == ACTIVE
    assert merchant.channel_names == ("amazon", "ebay")
    assert merchant.channels[0].marketplace_ids == ("ATVPDKIKX0DER",)
    # Adding again is an update, not a duplicate.
    add_merchant(warehouse, mid, channels={"walmart": ChannelConnection("walmart", f"sandbox:{mid}")})
    assert [m.merchant_id for m in list_merchants(warehouse)].count(mid) == 1
    assert get_merchant(warehouse, mid).channel_names == ("amazon", "ebay", "walmart")

    offboard_merchant(warehouse, mid)
    assert get_merchant(warehouse, mid).status == OFFBOARDED
    assert mid in [m.merchant_id for m in list_merchants(warehouse, status=OFFBOARDED)]
    with warehouse.connect() as conn:
        actions = [
            r[0]
            for r in conn.fetchall(
                f"SELECT action FROM {PLATFORM_SCHEMA}.audit_log WHERE merchant_id = ? ORDER BY occurred_at",
                [mid],
            )
        ]
    assert actions == ["merchant.added", "merchant.reactivated", "merchant.offboarded"]


@pytest.mark.parametrize(
    "ref",
    ["AKIAIOSFODNN7EXAMPLE", "Atzr|IwEBIA-secret-refresh-token", "env:lower", "sandbox:../x", "", "env:"],
)
def test_registry_refuses_anything_but_a_credential_reference(warehouse, merchant_id, ref):
    with pytest.raises(RegistryError, match="never put the secret itself"):
        add_merchant(warehouse, merchant_id(), channels={"amazon": ChannelConnection("amazon", ref)})


def test_unknown_channel_and_unknown_merchant(warehouse, merchant_id):
    with pytest.raises(RegistryError, match="unknown channel 'etsy'"):
        add_merchant(warehouse, merchant_id(), channels={"etsy": ChannelConnection("etsy", "env:X")})
    with pytest.raises(RegistryError, match="unknown merchant"):
        offboard_merchant(warehouse, merchant_id())


def test_resolve_credential_reads_the_environment_when_asked(monkeypatch):
    monkeypatch.setenv("AMAZON_REFRESH_ACME", "Atzr|token")
    assert resolve_credential("env:AMAZON_REFRESH_ACME") == "Atzr|token"
    assert resolve_credential("sandbox:acme") == "sandbox-refresh-acme"
    monkeypatch.delenv("AMAZON_REFRESH_ACME")
    with pytest.raises(RegistryError, match="not set"):
        resolve_credential("env:AMAZON_REFRESH_ACME")


def test_cli_merchants_commands(warehouse_url, merchant_id, capsys):
    mid = merchant_id()
    assert main(["--warehouse-url", warehouse_url, "merchants", "add", mid, "--name", "Acme",
                 "--channel", "amazon", "--channel", "ebay=env:EBAY_REFRESH_ACME"]) == 0
    assert "channels: amazon, ebay" in capsys.readouterr().out
    assert main(["--warehouse-url", warehouse_url, "merchants", "list"]) == 0
    listing = capsys.readouterr().out
    assert mid in listing and "active" in listing
    assert main(["--warehouse-url", warehouse_url, "merchants", "offboard", mid]) == 0
    assert "offboarded" in capsys.readouterr().out


@pytest.mark.parametrize("bad", ["a;drop schema x", "../etc", "a|b"])
def test_cli_refuses_bad_ids_with_a_clear_message(warehouse_url, bad, capsys):
    assert main(["--warehouse-url", warehouse_url, "merchants", "add", bad]) == 2
    assert "invalid merchant id" in capsys.readouterr().err
