"""Quarantine rows carry the exact payload and position of the record that was rejected.

The normalizers key a reject by the record's order id (or SKU) when it has one; an id can name
several records of a partition and need not be the raw row's key. These tests reject records
whose id differs from their raw key, repeats, or belongs to a good order next to its mangled copy,
and check each quarantine row against the very record it names.
"""

import copy
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import pytest

from assets.core import core_orders
from assets.extracts import EXTRACT_SPECS
from assets.partitions import MERCHANTS, merchant_date_key
from illuma_pipelines import normalize
from illuma_pipelines.core.orders import normalize_orders_at_positions
from illuma_pipelines.core.tables import ORDERS, ORDERS_QUARANTINE_DATASET
from illuma_pipelines.merchant_ids import merchant_schema
from illuma_pipelines.purge import merchant_policy
from illuma_pipelines.raw_records import (
    QUARANTINE,
    dumps_payload,
    ensure_pii_key_column,
    locate_rejects,
    quarantine_frame,
    raw_payload_batches,
    raw_table,
    split_records,
)
from illuma_pipelines.registry import ChannelConnection, add_merchant
from illuma_pipelines.shredding import extract_sealers
from illuma_pipelines.vault import is_ciphertext
from resources.warehouse import WarehouseResource
from tests.sandbox_helpers import amazon_client, amazon_sandbox, creds, sandbox_now

FIXTURES = Path(__file__).parent / "fixtures"


def _ebay_orders() -> list[dict]:
    body = normalize.loads((FIXTURES / "ebay" / "ebay_getOrders_doc_shape.json").read_text())
    return [dict(r) for r in normalize.ebay.orders_from_response(body)]


def _ebay_alone(text: str) -> list:
    return normalize.normalize_order_payloads("ebay", [text]).rejects


# ------------------------------------------------------------------------------ locating rejects
def test_each_ebay_reject_is_placed_on_its_own_record_when_ids_repeat():
    good, second, third = _ebay_orders()
    order_id = good["orderId"]
    # The third order as an EBAY_DE sale, in euros throughout.
    german = normalize.loads(
        dumps_payload({**third, "orderId": "14-55555-66666"}).replace('"USD"', '"EUR"').replace("EBAY_US", "EBAY_DE")
    )
    records = [
        good,
        {**good, "orderFulfillmentStatus": "TELEPORTED"},  # a mangled copy of the good order
        second,
        {**good, "orderPaymentStatus": "BOUNCED", "lastModifiedDate": "2026-03-05T08:00:00.000Z"},
        {**second, "orderId": 2711111222, "cancelStatus": {"cancelState": "EVAPORATED"}},  # a number
        german,
    ]
    texts = [dumps_payload(r) for r in records]
    batch = normalize_orders_at_positions("ebay", texts)
    assert [p for p, _ in batch.rejects] == [1, 3, 4]
    reasons = [reason for _, reason in batch.rejects]
    assert reasons[0] == f"order {order_id}: unknown orderFulfillmentStatus 'TELEPORTED'"
    assert reasons[1] == f"order {order_id}: unknown orderPaymentStatus 'BOUNCED'"
    assert "EVAPORATED" in reasons[2]
    # The good copy of the repeated id is the one that landed in the core frames.
    kept = batch.orders.set_index("marketplace_order_id")
    assert order_id in kept.index and "14-55555-66666" in kept.index


def test_a_reject_no_record_accounts_for_fails_loudly():
    texts = [dumps_payload(r) for r in _ebay_orders()]
    with pytest.raises(ValueError, match="05-12345-67890"):
        locate_rejects([("05-12345-67890", "unknown orderFulfillmentStatus 'X'")], texts, _ebay_alone)
    with pytest.raises(ValueError, match="record 7 of a batch of 3"):
        locate_rejects([(7, "record is a list, not an object")], texts, _ebay_alone)


def test_quarantine_frame_uses_positions_and_never_guesses_from_ids():
    extracted = datetime(2026, 3, 4, 6, 30)  # a raw row's UTC wall time
    records = _ebay_orders()
    mangled = {**records[0], "orderFulfillmentStatus": "TELEPORTED"}
    # The mangled copy stored under another raw key than its order id (as a re-keyed row would be).
    rows = [(r["orderId"], dumps_payload(r), extracted) for r in records] + [("05-12345-67890#2", dumps_payload(mangled), extracted)]
    rejects = normalize.normalize_order_payloads("ebay", [r[1] for r in rows]).rejects
    assert rejects == [("05-12345-67890", "order 05-12345-67890: unknown orderFulfillmentStatus 'TELEPORTED'")]
    with pytest.raises(ValueError, match="rejected_alone"):
        quarantine_frame(rejects, rows, dataset="core_orders", source="ebay.normalize_orders", partition_date="2026-03-04", run_id="r")
    frame = quarantine_frame(
        rejects, rows, dataset="core_orders", source="ebay.normalize_orders", partition_date="2026-03-04",
        run_id="r", first_position=5000, rejected_alone=_ebay_alone,
    )
    (row,) = frame.to_dict("records")
    assert row["position"] == 5003 and row["payload"] == rows[3][1]
    assert json.loads(row["payload"])["orderFulfillmentStatus"] == "TELEPORTED"
    assert row["extracted_at"] == extracted.replace(tzinfo=UTC)


def test_inventory_rejects_are_placed_on_their_own_rows():
    rows_in = [
        {"sellerSku": "BRK-PAD-F-2", "asin": "B0CBRK0002", "condition": "NewItem", "totalQuantity": 14},
        {"sellerSku": "BRK-PAD-F-2", "asin": "B0CBRK0002", "condition": "UsedLikeNew", "totalQuantity": "a few"},
        {"sellerSku": "WIPER-600", "asin": "B0CWIP0600", "condition": "NewItem", "totalQuantity": 3},
    ]
    extracted = datetime(2026, 3, 4, 6, 30)
    rows = [(f"{r['sellerSku']}/{i}", dumps_payload(r), extracted) for i, r in enumerate(rows_in)]
    part = normalize.amazon.normalize_inventory([normalize.loads(r[1]) for r in rows])
    assert [ref for ref, _ in part.rejects] == ["BRK-PAD-F-2"]
    frame = quarantine_frame(
        part.rejects, rows, dataset="core_inventory", source="amazon.normalize_inventory",
        partition_date="2026-03-04", run_id="r",
        rejected_alone=lambda text: normalize.amazon.normalize_inventory([normalize.loads(text)]).rejects,
    )
    assert frame["position"].tolist() == [1] and frame["payload"].tolist() == [rows[1][1]]


# ------------------------------------------------------------------- through the core order loader
AMAZON_ORDERS = next(spec for spec in EXTRACT_SPECS if spec.name == "amazon_orders")


def _replacement_id(order_id: str, digit: str) -> str:
    return order_id[:-1] + digit if order_id[-1] != digit else order_id[:-1] + "0"


def _amazon_partition(sandbox, mid: str) -> tuple[list[dict], dict[str, dict]]:
    """Real sandbox orders fetched with the real client, with rejected records among them."""
    now = sandbox_now()
    orders = list(amazon_client(sandbox).search_orders(creds(mid), now - timedelta(days=4), now - timedelta(days=1)))
    assert len(orders) >= 4, "the sandbox should hold a few orders for these days"
    good_a, stale, good_c, repeated = (copy.deepcopy(o) for o in orders[:4])
    a_id, r_id = good_a["orderId"], repeated["orderId"]
    bad = {
        # A v2026 record carrying a v0 AmazonOrderId that is not its orderId (its raw key).
        "stale_v0_id": {**stale, "AmazonOrderId": _replacement_id(stale["orderId"], "7")},
        # A mangled copy of order A sent again through the v0 bridge under a replacement orderId.
        "mangled_copy": {**good_a, "orderId": _replacement_id(a_id, "9"), "AmazonOrderId": a_id, "OrderStatus": "Shiped"},
        # Two broken records under the one id R.
        "repeat_first": {**repeated, "fulfillment": {**repeated["fulfillment"], "fulfillmentStatus": "TELEPORTED"}},
        "repeat_second": {
            **repeated, "orderId": _replacement_id(r_id, "3"), "AmazonOrderId": r_id,
            "OrderStatus": "Unshipped", "FulfillmentChannel": "AFN-EU",
        },
    }
    records = [good_a, bad["stale_v0_id"], good_c, bad["mangled_copy"], bad["repeat_first"], bad["repeat_second"]]
    return records, bad


def _land(warehouse, vault, mid: str, day: str, records: list[dict]) -> None:
    """Land the records as the amazon_orders extract does: its rule, PII sealed by the vault."""
    extracted_at = datetime.now(UTC)
    sealer, quarantine_sealer = extract_sealers(
        vault, mid, "amazon", "orders", policy=merchant_policy(warehouse, mid), extracted_at=extracted_at
    )
    split = split_records(
        records, AMAZON_ORDERS.rule, dataset=AMAZON_ORDERS.name, source="amazon.searchOrders", partition_date=day,
        window=(None, None), extracted_at=extracted_at, run_id="landing", sealer=sealer,
        quarantine_sealer=quarantine_sealer,
    )
    assert len(split.raw) == len(records) and split.quarantine.empty and split.sealed > 0
    schema, table = merchant_schema(mid), raw_table("amazon", "orders")
    with warehouse.merchant_scope(mid) as conn:
        conn.create_table(schema, table)
        ensure_pii_key_column(conn, schema, table.name)
        conn.replace_rows(schema, table.name, {"partition_date": day}, split.raw)


def test_core_order_rejects_are_quarantined_with_their_own_payload_and_position(
    warehouse, warehouse_url, merchant_id, instance, vault_resource
):
    mid = merchant_id("qpos")
    schema = merchant_schema(mid)
    add_merchant(warehouse, mid, channels={"amazon": ChannelConnection("amazon", f"sandbox:{mid}")})
    instance.add_dynamic_partitions(MERCHANTS, [mid])
    day = (sandbox_now() - timedelta(days=2)).date().isoformat()
    with amazon_sandbox() as sandbox:
        records, bad = _amazon_partition(sandbox, mid)
    _land(warehouse, vault_resource.get(warehouse), mid, day, records)
    with warehouse.merchant_scope(mid) as conn:
        stream = [row for rows in raw_payload_batches(conn, mid, "amazon", "orders", day, 100) for row in rows]

    def expected_position(record: dict) -> int:
        (position,) = [i for i, (key, _, _) in enumerate(stream) if key == record["orderId"]]
        return position

    expected = {
        name: (expected_position(record), record)
        for name, record in bad.items()
    }
    # One batch in this process (the mangled copy and order A together), then batches of two on
    # a worker process: the same rows both times.
    for batch_records, workers in ((100, 0), (2, 1)):
        result = dg.materialize(
            [core_orders],
            partition_key=merchant_date_key(mid, day),
            resources={"warehouse": WarehouseResource(url=warehouse_url), "vault": vault_resource},
            instance=instance,
            run_config={"ops": {"core_orders": {"config": {"batch_records": batch_records, "workers": workers}}}},
        )
        assert result.success
        with warehouse.merchant_scope(mid) as conn:
            quarantined = conn.fetchall(
                f"SELECT position, reason, payload, source FROM {schema}.{QUARANTINE.name} "
                "WHERE dataset = ? AND partition_date = ? ORDER BY position",
                [ORDERS_QUARANTINE_DATASET, day],
            )
            landed = {r[0] for r in conn.fetchall(f"SELECT marketplace_order_id FROM {schema}.{ORDERS.name}")}
        assert landed == {records[0]["orderId"], records[2]["orderId"]}
        assert [q[0] for q in quarantined] == sorted(p for p, _ in expected.values())
        by_position = {q[0]: q for q in quarantined}
        reasons = {
            "stale_v0_id": "unknown OrderStatus None",
            "mangled_copy": "unknown OrderStatus 'Shiped'",
            "repeat_first": "unknown fulfillmentStatus 'TELEPORTED'",
            "repeat_second": "unknown FulfillmentChannel 'AFN-EU'",
        }
        for name, (position, record) in expected.items():
            _, reason, payload, source = by_position[position]
            assert source == "amazon.normalize_orders" and reasons[name] in reason, (name, reason)
            # The very raw row that was rejected: its stored (sealed) text, byte for byte.
            assert payload == stream[position][1], name
            stored = json.loads(payload)
            assert stored["orderId"] == record["orderId"] and stored.get("AmazonOrderId") == record.get("AmazonOrderId")
            # Buyer PII stays sealed in the quarantine copy.
            buyer_name = (record.get("buyer") or {}).get("buyerName")
            if buyer_name:
                assert is_ciphertext(stored["buyer"]["buyerName"]) and buyer_name not in payload
        # The mangled copy does not point at the good order A, whose id its reject names.
        assert by_position[expected["mangled_copy"][0]][2] != stream[expected_position(records[0])][1]
