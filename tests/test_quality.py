"""The great-expectations suites and the plaintext-PII scan, on frames that do and do not pass."""

from decimal import Decimal

import pandas as pd
import pytest

from illuma_pipelines.quality import (
    SUITES,
    order_reconciliation_mismatches,
    plaintext_pii_findings,
    validate_frame,
)


def _orders(**overrides):
    frame = pd.DataFrame(
        {
            "channel": ["amazon", "ebay", "walmart"],
            "marketplace_order_id": ["111-1", "22-2", "3333"],
            "status": ["shipped", "delivered", "pending"],
            "fulfillment_channel": ["marketplace", "merchant", "merchant"],
            "currency": ["USD", "EUR", None],
            "items_subtotal": [Decimal("10.00"), Decimal("5.50"), None],
            "shipping_total": [Decimal("0"), Decimal("1.25"), None],
            "tax_total": [Decimal("0.80"), Decimal("0"), None],
        }
    )
    for column, values in overrides.items():
        frame[column] = values
    return frame


def test_good_orders_pass_every_expectation():
    report = validate_frame("orders", _orders())
    assert report.success, report.summary()
    assert report.evaluated == len(SUITES["orders"])


@pytest.mark.parametrize(
    ("column", "values", "failed"),
    [
        ("status", ["shipped", "lost_in_space", "pending"], "ExpectColumnValuesToBeInSet(status)"),
        ("currency", ["USD", "EUR", "XYZ"], "ExpectColumnValuesToBeInSet(currency)"),
        ("marketplace_order_id", ["111-1", "111-1", "3333"], None),
        ("items_subtotal", [Decimal("-1"), Decimal("5.50"), None], "ExpectColumnValuesToBeBetween(items_subtotal)"),
        ("channel", ["amazon", None, "walmart"], "ExpectColumnValuesToNotBeNull(channel)"),
    ],
)
def test_bad_orders_are_reported_with_counts(column, values, failed):
    frame = _orders(**{column: values})
    if column == "marketplace_order_id":
        frame["channel"] = ["amazon", "amazon", "walmart"]
        failed = "ExpectCompoundColumnsToBeUnique(channel,marketplace_order_id)"
    report = validate_frame("orders", frame)
    assert not report.success
    assert [f.expectation for f in report.failures] == [failed]
    assert report.failures[0].unexpected_count in (1, 2)


def test_inventory_suite_checks_keys_and_quantities():
    frame = pd.DataFrame(
        {
            "snapshot_date": ["2026-11-01"] * 3,
            "sku": ["BS-491588S"] * 3,
            "channel": ["amazon"] * 3,
            # The same SKU in two marketplaces is two pools; twice in one is a duplicate.
            "marketplace_id": ["A1PA6795UKMFR9", "A1PA6795UKMFR9", "A1F83G8C2ARO7P"],
            "fulfillable": [3, -1, 2],
            "inbound": [0, 0, 0],
            "reserved": [0, 0, 0],
            "unfulfillable": [0, 0, 0],
            "merchant_fulfilled": [0, 0, 0],
        }
    )
    report = validate_frame("inventory_snapshots", frame)
    failed = {f.expectation: f.unexpected_count for f in report.failures}
    assert failed == {
        "ExpectCompoundColumnsToBeUnique(snapshot_date,channel,marketplace_id,sku)": 2,
        "ExpectColumnValuesToBeBetween(fulfillable)": 1,
    }


def test_a_suite_on_a_table_missing_a_column_says_which():
    with pytest.raises(KeyError, match="status"):
        validate_frame("orders", _orders().drop(columns=["status"]))


def _reconciled_frames(amount):
    """One eBay order of two lines as a partition read back from the warehouse; `amount` makes
    the cells (float64 with NaN for NULL as DuckDB returns them, Decimal/None as PostgreSQL)."""
    none = float("nan") if amount is float else None
    orders = pd.DataFrame(
        {
            "channel": ["ebay"],
            "marketplace_order_id": ["22-2"],
            "currency": ["EUR"],
            "order_total": [amount("121.07")],
            "items_subtotal": [amount("129.00")],
            "shipping_total": [amount("19.80")],
            "promotion_total": [amount("27.73")],
            "tax_total": [none],
            "other_charges_total": [none],
        }
    )
    lines = pd.DataFrame(
        {
            "channel": ["ebay", "ebay"],
            "marketplace_order_id": ["22-2", "22-2"],
            "currency": ["EUR", "EUR"],
            "item_price": [amount("96.75"), amount("32.25")],
            "item_tax": [none, none],
            "shipping_price": [amount("14.85"), amount("4.95")],
            "shipping_tax": [none, none],
            "promotion_discount": [amount("27.73"), none],
            "gift_wrap_price": [none, none],
            "gift_wrap_tax": [none, none],
            "other_charges": [none, none],
        }
    )
    return orders, lines


@pytest.mark.parametrize("amount", [float, Decimal], ids=["duckdb-floats", "postgres-decimals"])
def test_orders_reconcile_with_their_lines_as_either_engine_returns_them(amount):
    orders, lines = _reconciled_frames(amount)
    assert order_reconciliation_mismatches(orders, lines) == []
    # A cent of rounding is tolerated; more is not.
    lines.loc[1, "shipping_price"] = amount("4.96")
    assert order_reconciliation_mismatches(orders, lines) == []
    lines.loc[1, "shipping_price"] = amount("0.00")
    (found,) = order_reconciliation_mismatches(orders, lines)
    assert (found.channel, found.marketplace_order_id, found.part) == ("ebay", "22-2", "shipping")
    assert found.describe() == "ebay 22-2: shipping 19.80 on the order, 14.85 from its lines"


def test_order_total_must_be_made_of_its_parts():
    orders, lines = _reconciled_frames(Decimal)
    orders.loc[0, "order_total"] = Decimal("140.87")
    (found,) = order_reconciliation_mismatches(orders, lines)
    assert found.part == "total"
    assert found.describe() == "ebay 22-2: total 140.87 on the order, 121.07 from its parts"


@pytest.mark.parametrize("amount", [float, Decimal], ids=["duckdb-floats", "postgres-decimals"])
def test_fees_adjustments_and_handling_are_parts_of_the_total(amount):
    """A parts order with a tire recycling fee, a price adjustment and line handling: eBay's
    total holds them; leaving any out is a mismatch."""
    orders, lines = _reconciled_frames(amount)
    # fee 7.00 (tire recycling) + adjustment -2.00 on the order; 3.50 handling on a line.
    orders.loc[0, "other_charges_total"] = amount("5.00")
    lines.loc[0, "other_charges"] = amount("3.50")
    orders.loc[0, "order_total"] = amount("129.57")
    assert order_reconciliation_mismatches(orders, lines) == []
    # The same handling held inside the order's deliveryCost instead of on top of it.
    orders.loc[0, "shipping_total"] = amount("23.30")
    assert order_reconciliation_mismatches(orders, lines) == []
    orders.loc[0, "shipping_total"] = amount("19.80")
    orders.loc[0, "other_charges_total"] = float("nan") if amount is float else None
    (found,) = order_reconciliation_mismatches(orders, lines)
    assert found.describe() == "ebay 22-2: total 129.57 on the order, 124.57 from its parts"


def test_reconciliation_needs_the_money_columns():
    orders, lines = _reconciled_frames(Decimal)
    with pytest.raises(KeyError, match="shipping_price"):
        order_reconciliation_mismatches(orders, lines.drop(columns=["shipping_price"]))
    assert order_reconciliation_mismatches(orders.iloc[0:0], lines) == []


def test_plaintext_scan_finds_emails_phones_names_and_clear_pii_columns():
    columns = [
        ("orders", "channel", ["amazon", "ebay"]),
        ("orders", "note", ["call 555-123-4567", "buyer jane.doe@example.com"]),
        ("orders", "ship_city", ["Seattle"]),
        ("buyer_pii", "buyer_name", ["Jane Doe"]),
        ("order_lines", "title", ["Jane Doe's carburetor"]),
    ]
    findings = plaintext_pii_findings(
        columns,
        known_values=["Jane Doe", "123 Main Street"],
        encrypted_columns=[("buyer_pii", "buyer_name")],
    )
    assert ("orders", "note", "e-mail address", 1) in findings
    assert ("buyer_pii", "buyer_name", "not a vault ciphertext", 1) in findings
    assert not [f for f in findings if f[1] in ("channel", "ship_city")]
    # The phone number is inside a sentence: only whole-value phone numbers count as such.
    assert ("orders", "note", "phone number", 1) not in findings


def test_dates_and_versions_named_after_them_are_not_phone_numbers():
    """The retention ledger's policy version ("2026-12-06.1") sat in retention_purges and failed
    the check of every merchant-day run after a purge (a second `make demo`)."""
    columns = [
        ("retention_purges", "policy_version", ["2026-12-06.1"]),
        ("t", "day", ["2026-12-06", "2026-12-06T10:00:00"]),
        ("t", "phone", ["+1 (555) 867-5309"]),
    ]
    assert plaintext_pii_findings(columns) == [("t", "phone", "phone number", 1)]


def test_vault_ciphertexts_pass_the_scan(tmp_path, monkeypatch):
    from illuma_pipelines.vault import FileKeyStore, LocalKeyring, Vault

    keyring = LocalKeyring([bytes(range(32))])
    vault = Vault(FileKeyStore(tmp_path / "keys.json"), keyring)
    cipher = vault.encrypt("acme_parts", "buyer_pii", "buyer_name", "amazon:111-1", "Jane Doe")
    findings = plaintext_pii_findings(
        [("buyer_pii", "buyer_name", [cipher]), ("orders", "x", [cipher])],
        known_values=["Jane Doe"],
        encrypted_columns=[("buyer_pii", "buyer_name")],
    )
    assert findings == []
