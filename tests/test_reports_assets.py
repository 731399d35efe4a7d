"""The report assets end to end on both engines (issue 16): rendered from the analytics models,
scanned for the merchant's buyer PII, listed in platform.reports and delivered to the outbox once;
a report that would show a buyer's PII is deleted and never sent."""

import email
import email.policy

import dagster as dg
import pandas as pd
import pytest

from assets.partitions import MERCHANT_DIM, MERCHANTS, MONTH_DIM
from assets.reports import MONTHLY_REPORT_KEY, NO_PII_CHECK, monthly_report, settlement_reports
from illuma_pipelines.core.orders import encrypted_pii_frame
from illuma_pipelines.core.tables import BUYER_PII, ORDER_LINES, ORDERS, PII_COLUMNS
from illuma_pipelines.merchant_ids import merchant_schema
from illuma_pipelines.registry import ChannelConnection, add_merchant
from illuma_pipelines.reports.store import get_report
from resources.delivery import DeliveryResource
from resources.warehouse import WarehouseResource
from tests.test_analytics_models import (
    SECOND_BUILD,
    _dbt_build,
    _first_load,
    _load,
    _order,
    _order_line,
    _rows,
    _second_load,
)

PHONE = "555-867-5309"


def _built(warehouse, warehouse_url, mid, tmp_path, extra=None, report_email="owner@harbor-brakes.example"):
    add_merchant(
        warehouse, mid, display_name="Harbor Brake Parts", report_email=report_email,
        channels={c: ChannelConnection(c, f"sandbox:{mid}") for c in ("amazon", "ebay", "walmart")},
    )
    _load(warehouse, mid, _first_load(), "2026-02-05")
    _load(warehouse, mid, _second_load(), SECOND_BUILD)
    if extra:
        _load(warehouse, mid, extra, SECOND_BUILD)
    _dbt_build(warehouse, warehouse_url, mid, SECOND_BUILD, tmp_path / "dbt", "--full-refresh")


def _resources(warehouse_url, vault_resource, outbox):
    return {
        "warehouse": WarehouseResource(url=warehouse_url), "vault": vault_resource,
        "delivery": DeliveryResource(outbox_dir=str(outbox)),
    }


def _month(mid: str) -> dg.MultiPartitionKey:
    return dg.MultiPartitionKey({MONTH_DIM: "2026-01-01", MERCHANT_DIM: mid})


@pytest.fixture
def reports_home(tmp_path, monkeypatch):
    monkeypatch.setenv("ILLUMA_DATA_DIR", str(tmp_path / "data"))
    return tmp_path


def test_reports_render_deliver_once_and_list_their_files(warehouse, warehouse_url, merchant_id, instance, vault_resource, reports_home):
    mid = merchant_id("reps")
    _built(warehouse, warehouse_url, mid, reports_home)
    instance.add_dynamic_partitions(MERCHANTS, [mid])
    outbox = reports_home / "outbox"
    resources = _resources(warehouse_url, vault_resource, outbox)
    for _ in range(2):  # a re-run re-renders and sends nothing twice
        monthly = dg.materialize([monthly_report], partition_key=_month(mid), resources=resources, instance=instance)
        assert monthly.success
    (check,) = monthly.get_asset_check_evaluations()
    assert check.passed and check.check_name == NO_PII_CHECK and check.metadata["files_scanned"].value == 2
    (event,) = monthly.get_asset_materialization_events()
    meta = event.materialization.metadata
    assert meta["delivery"].value == "sent" and "Revenue" in meta["summary"].value
    stored = get_report(warehouse, mid, "monthly", "2026-01")
    assert stored is not None and {f.name for f in stored.files} >= {f"{mid}-2026-01-monthly.xlsx", f"{mid}-2026-01-monthly.pdf"}
    sent = list(outbox.rglob("*.eml"))
    assert len(sent) == 1
    message = email.message_from_bytes(sent[0].read_bytes(), policy=email.policy.default)
    assert message["To"] == "owner@harbor-brakes.example" and "Harbor Brake Parts" in message["Subject"]
    assert sorted(p.get_filename() for p in message.iter_attachments()) == [f"{mid}-2026-01-monthly.pdf", f"{mid}-2026-01-monthly.xlsx"]

    # Every settlement the analytics know gets its report, once.
    first = dg.materialize([settlement_reports], partition_key=mid, resources=resources, instance=instance)
    again = dg.materialize([settlement_reports], partition_key=mid, resources=resources, instance=instance)
    known = _rows(warehouse, mid, "SELECT count(*) FROM {schema}.settlement_reconciliation")[0][0]
    done = first.get_asset_materialization_events()[0].materialization.metadata["settlements_reported"].value
    assert done == known > 0
    assert again.get_asset_materialization_events()[0].materialization.metadata["settlements_reported"].value == 0
    assert len(list(outbox.rglob("*.eml"))) == 1 + known


def test_a_report_showing_a_buyers_pii_is_deleted_and_not_sent(warehouse, warehouse_url, merchant_id, instance, vault_resource, reports_home):
    """A made-to-order part the merchant keyed by its buyer's phone number: the SKU reaches the
    orders sheet, so the scan finds the buyer's phone (sealed in core_buyer_pii) in the workbook."""
    mid = merchant_id("leak")
    custom = {
        ORDERS: [_order("ebay", "E-CUSTOM", "2026-01-20T10:00:00", "2026-01-21T10:00:00", "shipped", "45")],
        ORDER_LINES: [_order_line("ebay", "E-CUSTOM", f"CUSTOM {PHONE}", 1, "45", "CUSTOM")],
    }
    _built(warehouse, warehouse_url, mid, reports_home, custom)
    pii = pd.DataFrame([{"channel": "ebay", "marketplace_order_id": "E-CUSTOM", **dict.fromkeys(PII_COLUMNS), "buyer_phone": PHONE}])
    sealed = encrypted_pii_frame(vault_resource.get(warehouse), mid, pii)
    schema = merchant_schema(mid)
    with warehouse.merchant_scope(mid) as conn:
        conn.create_table(schema, BUYER_PII)
        conn.load_frame(schema, BUYER_PII.name, sealed.assign(partition_date="2026-01-21", loaded_at=pd.Timestamp("2026-01-21", tz="UTC"), run_id="seed"))
    instance.add_dynamic_partitions(MERCHANTS, [mid])
    outbox = reports_home / "outbox"
    result = dg.materialize(
        [monthly_report], partition_key=_month(mid), resources=_resources(warehouse_url, vault_resource, outbox),
        instance=instance, raise_on_error=False,
    )
    assert not result.success
    (check,) = result.get_asset_check_evaluations()
    assert not check.passed and check.metadata["findings"].value == [f"{mid}-2026-01-monthly.xlsx: buyer_phone"]
    assert PHONE not in repr(check.metadata)
    folder = reports_home / "data" / "reports" / mid / "2026-01"
    assert not [p for p in folder.iterdir() if p.suffix in (".xlsx", ".pdf")]
    assert not list(outbox.rglob("*.eml")) and get_report(warehouse, mid, "monthly", "2026-01") is None
    assert not result.get_asset_materialization_events() or MONTHLY_REPORT_KEY not in {
        e.asset_key for e in result.get_asset_materialization_events()
    }


def test_a_report_of_sandbox_data_holds_none_of_its_buyers_pii(warehouse, warehouse_url, merchant_id, instance, vault_resource, reports_home):
    """Forty days of a three-channel merchant from the sandbox (orders with real-looking buyers,
    sealed in core_buyer_pii; money), its analytics, then last month's report: the scan compares
    every file with each of those buyers' values and finds none."""
    from datetime import datetime, timedelta

    from assets.analytics import analytics_dbt_models
    from assets.core import core_money, core_orders
    from assets.extracts import extract_assets
    from assets.partitions import merchant_date_key
    from illuma_pipelines.demo import history_config
    from resources import resources_for, sandbox_clients
    from sensors.reports import previous_month
    from tests.test_settlements import MONEY_EXTRACTS, _sandbox_server

    mid = merchant_id("sbrep")
    add_merchant(warehouse, mid, display_name="Sandbox Parts", report_email="owner@sandbox-parts.example",
                 channels={c: ChannelConnection(c, f"sandbox:{mid}") for c in ("amazon", "ebay", "walmart")})
    instance.add_dynamic_partitions(MERCHANTS, [mid])
    names = MONEY_EXTRACTS | {f"{c}_orders" for c in ("amazon", "ebay", "walmart")}
    extracts = [a for a in extract_assets if a.key.path[-1] in names]
    resources = {
        **resources_for("local"), **_resources(warehouse_url, vault_resource, reports_home / "outbox"),
    }
    with _sandbox_server() as sb:
        now = sb.state.now()
        day = (now - timedelta(days=1)).date().isoformat()
        ops = {k: v for k, v in history_config(40)["ops"].items() if any(a.op.name == k for a in extracts)}
        landed = dg.materialize(
            [*extracts, core_orders, core_money], partition_key=merchant_date_key(mid, day),
            resources={**resources, **sandbox_clients(sb.base_url)}, instance=instance, run_config={"ops": ops},
        )
        assert landed.success
    assert dg.materialize([analytics_dbt_models], partition_key=mid, resources=resources, instance=instance).success
    month = previous_month(now)
    result = dg.materialize(
        [monthly_report], partition_key=dg.MultiPartitionKey({MONTH_DIM: month, MERCHANT_DIM: mid}),
        resources=resources, instance=instance,
    )
    assert result.success
    (check,) = result.get_asset_check_evaluations()
    assert check.passed and check.metadata["pii_values_compared"].value > 50
    (event,) = result.get_asset_materialization_events()
    assert event.materialization.metadata["empty"].value is False
    assert len(list((reports_home / "outbox").rglob("*.eml"))) == 1
    # The figures of both files equal the warehouse's, read straight from the models.
    from pypdf import PdfReader

    from illuma_pipelines.reports.data import monthly_report_data
    from tests.test_reports_render import _assert_same_everywhere, _expected_month

    folder = reports_home / "data" / "reports" / mid / month[:7]
    xlsx, pdf = folder / f"{mid}-{month[:7]}-monthly.xlsx", folder / f"{mid}-{month[:7]}-monthly.pdf"
    following = (datetime.fromisoformat(month) + timedelta(days=32)).replace(day=1).date().isoformat()
    data = monthly_report_data(warehouse, mid, month[:7], "Sandbox Parts")
    text = "\n".join(page.extract_text() for page in PdfReader(pdf).pages)
    _assert_same_everywhere(data, _expected_month(warehouse, mid, month, following), xlsx, text)


def test_an_unknown_settlement_fails_clearly_and_the_others_are_reported(warehouse, warehouse_url, merchant_id, instance, vault_resource, reports_home):
    mid = merchant_id("unk")
    _built(warehouse, warehouse_url, mid, reports_home)
    instance.add_dynamic_partitions(MERCHANTS, [mid])
    result = dg.materialize(
        [settlement_reports], partition_key=mid, resources=_resources(warehouse_url, vault_resource, reports_home / "outbox"),
        instance=instance, raise_on_error=False,
        run_config={"ops": {"reports__settlements": {"config": {"settlements": ["ebay:EB-P1", "ebay:NOPE-1"]}}}},
    )
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE)
    assert "settlement ebay NOPE-1 is not in" in str(failure.event_specific_data.error)
    assert get_report(warehouse, mid, "settlement", "ebay-EB-P1") is not None
    assert len(list((reports_home / "outbox").rglob("*.eml"))) == 1


def test_the_privacy_statement_asset_renders_scans_and_delivers(warehouse, warehouse_url, merchant_id, instance, vault_resource, reports_home):
    from assets.partitions import QUARTER_DIM
    from assets.reports import privacy_statement

    mid = merchant_id("priv")
    add_merchant(warehouse, mid, display_name="Harbor Brake Parts", report_email="owner@harbor-brakes.example")
    instance.add_dynamic_partitions(MERCHANTS, [mid])
    outbox = reports_home / "outbox"
    result = dg.materialize(
        [privacy_statement], partition_key=dg.MultiPartitionKey({QUARTER_DIM: "2026-07-01", MERCHANT_DIM: mid}),
        resources=_resources(warehouse_url, vault_resource, outbox), instance=instance,
    )
    assert result.success
    (check,) = result.get_asset_check_evaluations()
    assert check.passed
    assert get_report(warehouse, mid, "privacy", "2026-Q3") is not None
    (sent,) = list(outbox.rglob("*.eml"))
    message = email.message_from_bytes(sent.read_bytes(), policy=email.policy.default)
    assert [p.get_filename() for p in message.iter_attachments()] == [f"{mid}-2026-Q3-privacy.pdf"]


def test_a_merchant_without_report_email_needs_no_mail_provider(
    warehouse, warehouse_url, merchant_id, instance, vault_resource, reports_home, monkeypatch
):
    """Production delivers by Postmark; a deployment without its token (make prod-up on this
    machine) still renders the reports of merchants who have no report e-mail, and records them."""
    mid = merchant_id("nomail")
    _built(warehouse, warehouse_url, mid, reports_home, report_email=None)
    instance.add_dynamic_partitions(MERCHANTS, [mid])
    monkeypatch.delenv("ILLUMA_TEST_NO_SUCH_TOKEN", raising=False)
    resources = {
        "warehouse": WarehouseResource(url=warehouse_url), "vault": vault_resource,
        "delivery": DeliveryResource(kind="postmark", server_token_ref="env:ILLUMA_TEST_NO_SUCH_TOKEN"),
    }
    monthly = dg.materialize([monthly_report], partition_key=_month(mid), resources=resources, instance=instance)
    settlements = dg.materialize([settlement_reports], partition_key=mid, resources=resources, instance=instance)
    assert monthly.success and settlements.success
    (event,) = monthly.get_asset_materialization_events()
    assert event.materialization.metadata["delivery"].value == "not sent: the merchant has no report e-mail"
    assert get_report(warehouse, mid, "monthly", "2026-01") is not None
    assert settlements.get_asset_materialization_events()[0].materialization.metadata["settlements_reported"].value > 0
