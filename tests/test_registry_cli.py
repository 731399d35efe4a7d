"""The merchant registry and the `illuma merchants` CLI, on both engines."""

import json
from datetime import UTC, datetime, timedelta

import pytest

from illuma_pipelines.cli import main
from illuma_pipelines.purge import (
    ErasureNotDue,
    due_erasures,
    erase_account,
    request_deletion,
    requests_report,
    withdraw_deletion,
)
from illuma_pipelines.registry import (
    ACTIVE,
    OFFBOARDED,
    ChannelConnection,
    PendingDeletion,
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


def test_cli_channel_marketplaces_with_or_without_a_reference(warehouse, warehouse_url, merchant_id, capsys):
    mid = merchant_id()
    assert main([
        "--warehouse-url", warehouse_url, "merchants", "add", mid,
        "--channel", "amazon@A1PA6795UKMFR9,A1F83G8C2ARO7P",  # as issue 13 writes it: the sandbox
        "--channel", "ebay=env:EBAY_REFRESH_ACME@EBAY_DE",
        "--channel", "walmart@US,CA",
    ]) == 0
    connections = {c.channel: (c.credential_ref, c.marketplace_ids) for c in get_merchant(warehouse, mid).channels}
    assert connections == {
        "amazon": (f"sandbox:{mid}", ("A1PA6795UKMFR9", "A1F83G8C2ARO7P")),
        "ebay": ("env:EBAY_REFRESH_ACME", ("EBAY_DE",)),
        "walmart": (f"sandbox:{mid}", ("US", "CA")),
    }


@pytest.mark.parametrize(
    ("channel", "foreign"), [("ebay", "ATVPDKIKX0DER"), ("amazon", "EBAY_DE"), ("walmart", "A1PA6795UKMFR9"), ("walmart", "EBAY_US")]
)
def test_a_marketplace_id_of_another_channel_is_refused(warehouse, merchant_id, channel, foreign):
    mid = merchant_id()
    with pytest.raises(RegistryError, match=f"'{foreign}' is not a {channel} marketplace id"):
        add_merchant(warehouse, mid, channels={channel: ChannelConnection(channel, f"sandbox:{mid}", (foreign,))})
    assert not any(m.merchant_id == mid for m in list_merchants(warehouse))


@pytest.mark.parametrize("bad", ["a;drop schema x", "../etc", "a|b"])
def test_cli_refuses_bad_ids_with_a_clear_message(warehouse_url, bad, capsys):
    assert main(["--warehouse-url", warehouse_url, "merchants", "add", bad]) == 2
    assert "invalid merchant id" in capsys.readouterr().err


def _registry_state(warehouse, mid):
    with warehouse.connect() as conn:
        return {
            table: sorted(map(tuple, conn.fetchall(f"SELECT * FROM {PLATFORM_SCHEMA}.{table} WHERE merchant_id = ?", [mid])))
            for table in ("merchants", "channel_connections", "data_requests", "audit_log")
        }


def test_re_adding_a_merchant_with_a_pending_deletion_is_refused(warehouse, warehouse_url, merchant_id, capsys):
    mid = merchant_id()
    add_merchant(warehouse, mid, channels={"amazon": ChannelConnection("amazon", f"sandbox:{mid}")})
    request = request_deletion(warehouse, mid, requested_by="merchant:acme")
    before = _registry_state(warehouse, mid)
    with pytest.raises(PendingDeletion) as refused:
        add_merchant(warehouse, mid, display_name="Acme again", channels={"ebay": ChannelConnection("ebay", f"sandbox:{mid}")})
    message = str(refused.value)
    assert request["request_id"] in message and "pending deletion request" in message
    assert f"due for erasure from {request['erasure_due_at']:%Y-%m-%d %H:%M} UTC" in message
    assert f"received {request['received_at']:%Y-%m-%d %H:%M} UTC from merchant:acme" in message
    assert f"illuma merchants withdraw-deletion {mid} --requested-by NAME" in message
    assert _registry_state(warehouse, mid) == before

    assert main(["--warehouse-url", warehouse_url, "merchants", "add", mid, "--channel", "ebay"]) == 2
    assert "pending deletion request" in capsys.readouterr().err
    assert _registry_state(warehouse, mid) == before
    assert get_merchant(warehouse, mid).status == OFFBOARDED


def test_withdrawing_a_deletion_request_is_audited_and_lets_the_merchant_back(warehouse, warehouse_url, merchant_id, capsys):
    mid = merchant_id()
    add_merchant(warehouse, mid)
    request = request_deletion(warehouse, mid, immediate=True, requested_by="merchant:acme")
    assert main(["--warehouse-url", warehouse_url, "merchants", "withdraw-deletion", mid,
                 "--requested-by", "support:jane"]) == 0
    assert f"request {request['request_id']}" in capsys.readouterr().out
    assert get_merchant(warehouse, mid).status == ACTIVE
    with warehouse.connect() as conn:
        completed, outcome = conn.fetchone(
            f"SELECT completed_at, outcome FROM {PLATFORM_SCHEMA}.data_requests WHERE request_id = ?",
            [request["request_id"]],
        )
        actor, details = conn.fetchone(
            f"SELECT actor, details FROM {PLATFORM_SCHEMA}.audit_log WHERE merchant_id = ? AND action = ?",
            [mid, "merchant.deletion_withdrawn"],
        )
    assert completed is not None and outcome == "withdrawn"
    details = details if isinstance(details, dict) else json.loads(details)  # JSONB on PostgreSQL
    assert actor == "support:jane" and details["request_id"] == request["request_id"]
    # No longer open, so neither overdue nor due for erasure.
    assert request["request_id"] not in [r["request_id"] for r in requests_report(warehouse, datetime.now(UTC))]
    assert mid not in [s.merchant_id for s in due_erasures(warehouse, datetime.now(UTC) + timedelta(days=60))]
    main(["--warehouse-url", warehouse_url, "requests", "--all"])
    (line,) = [x for x in capsys.readouterr().out.splitlines() if request["request_id"] in x]
    assert line.startswith("done") and line.endswith("withdrawn")

    add_merchant(warehouse, mid, display_name="Acme Parts", channels={"ebay": ChannelConnection("ebay", f"sandbox:{mid}")})
    assert get_merchant(warehouse, mid).channel_names == ("ebay",)
    with pytest.raises(RegistryError, match="no pending deletion request"):
        withdraw_deletion(warehouse, mid, requested_by="support:jane")
    assert main(["--warehouse-url", warehouse_url, "merchants", "withdraw-deletion", mid,
                 "--requested-by", "support:jane"]) == 2


def test_a_withdrawal_stops_the_erasure_and_an_erasure_that_began_cannot_be_withdrawn(warehouse, merchant_id, vault_resource):
    mid = merchant_id()
    add_merchant(warehouse, mid)
    request_deletion(warehouse, mid, immediate=True, requested_by="merchant:acme")
    withdraw_deletion(warehouse, mid, requested_by="support:jane")
    with pytest.raises(ErasureNotDue, match="is active"):
        erase_account(warehouse, vault_resource.get(warehouse), mid, now=datetime.now(UTC), run_id="t")
    assert get_merchant(warehouse, mid).status == ACTIVE

    # An erasure stopped after dropping the schema (a killed run) cannot be withdrawn: it resumes.
    request_deletion(warehouse, mid, immediate=True, requested_by="merchant:acme")
    with warehouse.connect() as conn:
        warehouse.drop_merchant_schema_in(conn, mid)
    with pytest.raises(RegistryError, match="has begun"):
        withdraw_deletion(warehouse, mid, requested_by="support:jane")
    assert get_merchant(warehouse, mid).status == OFFBOARDED
    erase_account(warehouse, vault_resource.get(warehouse), mid, now=datetime.now(UTC), run_id="t")
    with pytest.raises(RegistryError, match="was erased"):
        withdraw_deletion(warehouse, mid, requested_by="support:jane")


def _audit_actions(warehouse, mid: str) -> list[tuple[str, dict]]:
    with warehouse.connect() as conn:
        rows = conn.fetchall(
            f"SELECT action, details FROM {PLATFORM_SCHEMA}.audit_log WHERE merchant_id = ? ORDER BY occurred_at",
            [mid],
        )
    return [(action, json.loads(d) if isinstance(d, str) else d) for action, d in rows]


def test_report_email_through_the_cli_is_validated_and_audited(warehouse, warehouse_url, merchant_id, capsys):
    mid = merchant_id()
    cli = ["--warehouse-url", warehouse_url, "merchants"]
    assert main([*cli, "add", mid, "--report-email", "Reports.Team@Acme-Parts.COM"]) == 0
    assert "reports to: Reports.Team@acme-parts.com" in capsys.readouterr().out
    assert get_merchant(warehouse, mid).report_email == "Reports.Team@acme-parts.com"
    # Adding again without the flag keeps the address.
    assert main([*cli, "add", mid, "--channel", "ebay"]) == 0
    assert get_merchant(warehouse, mid).report_email == "Reports.Team@acme-parts.com"

    for bad in ("not-an-address", "Acme <ops@acme.com>", "ops@acme", "ops@acme.com\nBcc: x@evil.com", "a b@acme.com"):
        assert main([*cli, "set-report-email", mid, bad]) == 2
        assert "is not an e-mail address a report can go to" in capsys.readouterr().err
    assert get_merchant(warehouse, mid).report_email == "Reports.Team@acme-parts.com"

    assert main([*cli, "set-report-email", mid, "finance@acme-parts.com"]) == 0
    assert "reports go to finance@acme-parts.com" in capsys.readouterr().out
    assert main([*cli, "set-report-email", mid, "--clear"]) == 0
    assert "reports are rendered, not sent" in capsys.readouterr().out
    assert get_merchant(warehouse, mid).report_email is None
    assert main([*cli, "set-report-email", mid]) == 2
    assert main([*cli, "set-report-email", merchant_id("ghost"), "a@b.co"]) == 2
    assert "unknown merchant" in capsys.readouterr().err

    audited = [(a, d) for a, d in _audit_actions(warehouse, mid) if a.startswith("merchant.report_email")]
    # The audit log holds the domain, never the whole address.
    assert audited == [
        ("merchant.report_email_set", {"domain": "acme-parts.com"}),
        ("merchant.report_email_set", {"domain": "acme-parts.com", "previous_domain": "acme-parts.com"}),
        ("merchant.report_email_removed", {"previous_domain": "acme-parts.com"}),
    ]
    assert all("finance" not in json.dumps(d) for _, d in _audit_actions(warehouse, mid))
    listed = {m.merchant_id: m.report_email for m in list_merchants(warehouse)}
    assert listed[mid] is None
