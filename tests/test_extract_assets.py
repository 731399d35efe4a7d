"""Extract assets through the real sandbox server and clients, into a real warehouse."""

import gzip
import json
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import dagster as dg
import pytest

from assets.extracts import day_window, extract_assets
from assets.partitions import MERCHANTS, merchant_date_key
from illuma_pipelines.merchant_ids import merchant_schema
from illuma_pipelines.normalize import parse_settlement_report
from illuma_pipelines.normalize.amazon_settlement import settlement_format_problem
from illuma_pipelines.registry import ChannelConnection, add_merchant
from illuma_pipelines.sandbox.amazon import (
    amazon_orders_updated_between,
    amazon_transactions_posted_between,
)
from illuma_pipelines.sandbox.ebay import (
    ebay_payout_plans_between,
    ebay_payout_transactions,
    ebay_short_payouts,
)
from illuma_pipelines.sandbox.faults import FAULT_KINDS, FaultConfig
from resources import sandbox_clients
from resources.amazon import AmazonSellingPartnerHttp
from resources.vault import VaultResource
from resources.warehouse import WarehouseResource
from tests.sandbox_helpers import FIXTURES, amazon_sandbox, ebay_client, sandbox_now
from tests.test_normalize_settlement import V1_SETTLEMENT_UK

AMAZON_CORE = [a for a in extract_assets if a.key.path[-1] in ("amazon_orders", "amazon_financial_transactions")]


def _fast_amazon(base_url: str) -> AmazonSellingPartnerHttp:
    local = sandbox_clients(base_url)["amazon"]
    # Short timeouts and backoff so injected faults cost milliseconds, not minutes; rates sped up
    # as the sandbox's are.
    return AmazonSellingPartnerHttp(
        endpoint=local.endpoint,
        token_url=local.token_url,
        client_id=local.client_id,
        client_secret=local.client_secret,
        read_timeout=0.4,
        connect_timeout=1.0,
        backoff_base=0.01,
        backoff_cap=0.05,
        max_retries=12,
        rate_speedup=1000.0,
    )


def _vault() -> VaultResource:
    """A vault with a key store of its own in a fresh temporary folder (never the project's)."""
    keys = Path(tempfile.mkdtemp(prefix="illuma-keys-"))
    return VaultResource(key_store_path=str(keys / "keystore.json"), master_key_file=str(keys / "master.key"))


def _materialize(assets, instance, url, base_url, merchant_id, day):
    return dg.materialize(
        assets,
        partition_key=merchant_date_key(merchant_id, day),
        resources={"warehouse": WarehouseResource(url=url), "amazon": _fast_amazon(base_url), "vault": _vault()},
        instance=instance,
    )


def _raw_keys(warehouse, merchant_id, table, day):
    with warehouse.merchant_scope(merchant_id) as conn:
        return sorted(
            r[0]
            for r in conn.fetchall(
                f"SELECT record_key FROM {merchant_schema(merchant_id)}.{table} WHERE partition_date = ?", [day]
            )
        )


def test_faulty_multi_day_extract_lands_exactly_what_the_sandbox_holds(warehouse, warehouse_url, merchant_id, instance):
    now = sandbox_now()
    days = [(now - timedelta(days=n)).date().isoformat() for n in (3, 2)]
    merchants = [merchant_id("flt_a"), merchant_id("flt_b")]
    for mid in merchants:
        add_merchant(warehouse, mid, channels={"amazon": ChannelConnection("amazon", f"sandbox:{mid}")})
    instance.add_dynamic_partitions(MERCHANTS, merchants)
    share = 0.2 / len(FAULT_KINDS)
    faults = FaultConfig(**{k: share for k in FAULT_KINDS}, seed=5, timeout_seconds=1.0, retry_after_seconds=0.01)
    with amazon_sandbox(now=now, faults=faults, orders_page_size=5, finances_page_size=4) as sandbox:
        for _ in range(2):  # the second run must change nothing
            for mid in merchants:
                for day in days:
                    assert _materialize(AMAZON_CORE, instance, warehouse_url, sandbox.base_url, mid, day).success
            for mid in merchants:
                for day in days:
                    start, end = day_window(day, 2)
                    held_orders = sorted(o["orderId"] for o in amazon_orders_updated_between(sandbox.state, mid, start, end))
                    # Finances are read two days back (the last ~48 h may be incomplete).
                    tx_start, _ = day_window(day, 48)
                    held_tx = sorted(t["transactionId"] for t in amazon_transactions_posted_between(sandbox.state, mid, tx_start, end))
                    assert held_orders, "the sandbox should hold orders for these days"
                    assert _raw_keys(warehouse, mid, "raw_amazon_orders", day) == held_orders
                    assert _raw_keys(warehouse, mid, "raw_amazon_financial_transactions", day) == held_tx
        injected = sandbox.state.faults.counts
    assert sum(injected.values()) > 0 and len([k for k, v in injected.items() if v]) >= 5
    quarantined = []
    for mid in merchants:
        with warehouse.merchant_scope(mid) as conn:
            quarantined += conn.fetchall(
                f"SELECT dataset, reason, payload FROM {merchant_schema(mid)}.raw_quarantine"
            )
    # Only the sandbox's deliberately broken copies are quarantined, each with its reason.
    for dataset, reason, payload in quarantined:
        record = json.loads(payload)
        assert ("orderId" not in record) or ("transactionId" not in record), (dataset, reason)
        assert reason


def test_unconnected_channel_is_skipped_visibly(warehouse, warehouse_url, merchant_id, instance):
    mid = merchant_id("noamz")
    add_merchant(warehouse, mid, channels={"ebay": ChannelConnection("ebay", f"sandbox:{mid}")})
    instance.add_dynamic_partitions(MERCHANTS, [mid])
    day = (sandbox_now() - timedelta(days=2)).date().isoformat()
    with amazon_sandbox() as sandbox:
        result = _materialize(AMAZON_CORE[:1], instance, warehouse_url, sandbox.base_url, mid, day)
        assert sum(sandbox.state.served.values()) == 0  # no request was made for it
    (mat,) = result.asset_materializations_for_node(AMAZON_CORE[0].op.name)
    assert mat.metadata["skipped"].value == f"amazon not connected for {mid}"
    assert mat.metadata["records"].value == 0


def test_no_secret_or_buyer_pii_in_logs_or_event_metadata(warehouse, warehouse_url, merchant_id, instance, caplog):
    mid = merchant_id("scan")
    add_merchant(warehouse, mid, channels={"amazon": ChannelConnection("amazon", f"sandbox:{mid}")})
    instance.add_dynamic_partitions(MERCHANTS, [mid])
    day = (sandbox_now() - timedelta(days=2)).date().isoformat()
    faults = FaultConfig(expired_token=0.1, server_error=0.1, seed=3, retry_after_seconds=0.01)
    with amazon_sandbox(faults=faults) as sandbox:
        result = _materialize(AMAZON_CORE, instance, warehouse_url, sandbox.base_url, mid, day)
        tokens = sandbox.state.issued_access_tokens()
    assert result.success
    with warehouse.merchant_scope(mid) as conn:
        rows = conn.fetchall(f"SELECT payload FROM {merchant_schema(mid)}.raw_amazon_orders")
        payloads = [json.loads(r[0]) if isinstance(r[0], str) else r[0] for r in rows]
    pii = set()
    for order in payloads:
        pii.add((order.get("buyer") or {}).get("buyerName"))
        pii.add((order.get("buyer") or {}).get("buyerEmail"))
        address = (order.get("recipient") or {}).get("deliveryAddress") or {}
        pii.update({address.get("name"), address.get("addressLine1"), address.get("phone")})
    pii.discard(None)
    pii.discard("")
    assert pii, "the sandbox should have produced buyer PII to look for"
    secrets = {"illuma-sandbox-app-secret", f"sandbox-refresh-{mid}", *tokens}
    events = instance.all_logs(result.run_id)
    text = "\n".join(str(e) for e in events) + "\n" + caplog.text
    for value in secrets | pii:
        assert value not in text, f"a secret or PII value leaked into logs/events: {value[:4]}..."


def test_unknown_merchant_partition_fails_with_a_clear_error(warehouse_url, merchant_id, instance):
    mid = merchant_id("ghost")
    instance.add_dynamic_partitions(MERCHANTS, [mid])
    with amazon_sandbox() as sandbox:
        result = dg.materialize(
            AMAZON_CORE[:1],
            partition_key=merchant_date_key(mid, "2026-11-01"),
            resources={
                "warehouse": WarehouseResource(url=warehouse_url), "amazon": _fast_amazon(sandbox.base_url), "vault": _vault()
            },
            instance=instance,
            raise_on_error=False,
        )
    assert not result.success
    assert "unknown merchant" in str(result.get_step_failure_events()[0].event_specific_data.error)


@pytest.mark.parametrize("day", ["2026-11-01"])
def test_day_window_has_the_lookback(day):
    start, end = day_window(day, 2)
    assert start.isoformat() == "2026-10-31T22:00:00+00:00"
    assert end.isoformat() == "2026-11-02T00:00:00+00:00"


# ------------------------------------------------------------------- settlement documents' format
SETTLEMENT_EXTRACT = next(a for a in extract_assets if a.key.path[-1] == "amazon_settlement_reports")
STUB_TOKEN = "Atza|IwEBIStubAccessTokenForSettlements"


@contextmanager
def settlement_reports_server(reports: list[tuple[dict, bytes]]) -> Iterator[tuple[str, list[str]]]:
    """A stand-in for the SP-API token, Reports 2021-06-30 and document download endpoints,
    serving the given (report metadata, document bytes) over two pages of getReports: the
    sandbox only ever writes V2 files. Yields its base URL and the paths it was asked for."""
    asked: list[str] = []
    half = (len(reports) + 1) // 2
    next_token = "eyJwYWdlIjoyfQ=="

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:  # keep test output quiet
            pass

        def _send(self, status: int, body: bytes, content_type: str = "application/json") -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _json(self, status: int, body: dict) -> None:
            self._send(status, json.dumps(body).encode())

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            asked.append(self.path)
            if self.path != "/amazon/auth/o2/token":
                return self._json(404, {"error": "not_found"})
            self._json(200, {"access_token": STUB_TOKEN, "token_type": "bearer", "expires_in": 3600})

        def do_GET(self) -> None:
            url = urlsplit(self.path)
            query = parse_qs(url.query)
            asked.append(url.path)
            documents = {meta["reportDocumentId"]: body for meta, body in reports}
            if url.path.startswith("/s3/"):  # pre-signed: no token
                body = documents[url.path.removeprefix("/s3/")]
                return self._send(200, body, "text/plain; charset=UTF-8")
            if self.headers.get("x-amz-access-token") != STUB_TOKEN:
                return self._json(403, {"errors": [{"code": "Unauthorized", "message": "Access to requested resource is denied."}]})
            if url.path == "/amazon/reports/2021-06-30/reports":
                if query.get("nextToken") == [next_token]:
                    return self._json(200, {"reports": [meta for meta, _ in reports[half:]]})
                if query.get("reportTypes") != ["GET_V2_SETTLEMENT_REPORT_DATA_FLAT_FILE_V2"]:
                    return self._json(400, {"errors": [{"code": "InvalidInput", "message": "reportTypes"}]})
                return self._json(200, {"reports": [meta for meta, _ in reports[:half]], "nextToken": next_token})
            prefix = "/amazon/reports/2021-06-30/documents/"
            if url.path.startswith(prefix) and url.path.removeprefix(prefix) in documents:
                document_id = url.path.removeprefix(prefix)
                gzipped = documents[document_id][:2] == b"\x1f\x8b"
                meta = {"reportDocumentId": document_id, "url": f"{base}/s3/{document_id}"}
                return self._json(200, {**meta, "compressionAlgorithm": "GZIP"} if gzipped else meta)
            self._json(404, {"errors": [{"code": "NotFound", "message": url.path}]})

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    base = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield base, asked
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def _settlement_report(report_id: str, created: datetime, marketplace: str, document_id: str) -> dict:
    stamp = created.strftime("%Y-%m-%dT%H:%M:%S.000Z")
    return {
        "reportType": "GET_V2_SETTLEMENT_REPORT_DATA_FLAT_FILE_V2",
        "processingEndTime": stamp,
        "processingStatus": "DONE",
        "marketplaceIds": [marketplace],
        "reportDocumentId": document_id,
        "reportId": report_id,
        "dataEndTime": (created - timedelta(hours=3)).strftime("%Y-%m-%dT%H:%M:%S+00:00"),
        "createdTime": stamp,
        "processingStartTime": stamp,
        "dataStartTime": (created - timedelta(days=14, hours=3)).strftime("%Y-%m-%dT%H:%M:%S+00:00"),
    }


def test_unreadable_settlement_documents_are_quarantined_and_the_rest_lands(
    warehouse, warehouse_url, merchant_id, instance, vault_resource
):
    mid = merchant_id("stl")
    schema = merchant_schema(mid)
    add_merchant(warehouse, mid, channels={"amazon": ChannelConnection("amazon", f"sandbox:{mid}")})
    instance.add_dynamic_partitions(MERCHANTS, [mid])
    day = (datetime.now(UTC) - timedelta(days=1)).date().isoformat()
    start = datetime.fromisoformat(day).replace(tzinfo=UTC)
    us = (FIXTURES / "amazon_settlement_v2_flat_sample.txt").read_text(encoding="utf-8")
    de = (FIXTURES / "amazon_settlement_v2_flat_de_sample.txt").read_text(encoding="utf-8")
    outage = "<!DOCTYPE html><html><head><title>503 Service Unavailable</title></head><body></body></html>"
    uk_problem = settlement_format_problem(V1_SETTLEMENT_UK)
    reports = [
        (_settlement_report("54214019540", start + timedelta(hours=2), "ATVPDKIKX0DER", "amzn1.spdoc.1.4.na.7f0c2a9e-1b3d-4c5e-9f60-1a2b3c4d5e6f"), us.encode()),
        # The old V1 layout of a UK account: the client finds its settlement-id, the parser refuses it.
        (_settlement_report("54214019541", start + timedelta(hours=5), "A1F83G8C2ARO7P", "amzn1.spdoc.1.4.eu.0d6e1f2a-3b4c-4d5e-8f70-2b3c4d5e6f70"), gzip.compress(V1_SETTLEMENT_UK.encode())),
        (_settlement_report("54214019542", start + timedelta(hours=9), "A1PA6795UKMFR9", "amzn1.spdoc.1.4.eu.1e7f2a3b-4c5d-4e6f-9a81-3c4d5e6f7081"), gzip.compress(de.encode("utf-8"))),
        # A proxy's error page stored as the document: no settlement id at all.
        (_settlement_report("54214019543", start + timedelta(hours=13), "A1PA6795UKMFR9", "amzn1.spdoc.1.4.eu.2f8a3b4c-5d6e-4f70-8b92-4d5e6f708192"), outage.encode()),
    ]
    with settlement_reports_server(reports) as (base_url, asked):
        for _ in range(2):  # a re-run replaces the partition's rows and quarantine
            result = dg.materialize(
                [SETTLEMENT_EXTRACT],
                partition_key=merchant_date_key(mid, day),
                resources={"warehouse": WarehouseResource(url=warehouse_url), "amazon": _fast_amazon(base_url), "vault": vault_resource},
                instance=instance,
            )
            assert result.success
            (mat,) = result.asset_materializations_for_node(SETTLEMENT_EXTRACT.op.name)
            assert mat.metadata["records"].value == 2 and mat.metadata["quarantined"].value == 2
            assert _raw_keys(warehouse, mid, "raw_amazon_settlement_reports", day) == ["11223344556", "99887766554"]
            with warehouse.merchant_scope(mid) as conn:
                quarantined = conn.fetchall(
                    f"SELECT dataset, source, position, reason, payload FROM {schema}.raw_quarantine "
                    "WHERE partition_date = ? ORDER BY position",
                    [day],
                )
                landed = conn.fetchall(
                    f"SELECT CAST(payload AS TEXT) FROM {schema}.raw_amazon_settlement_reports WHERE partition_date = ?",
                    [day],
                )
            assert [q[:3] for q in quarantined] == [
                ("amazon_settlement_reports", "amazon.getReports", 1),
                ("amazon_settlement_reports", "amazon.getReports", 3),
            ]
            (_, _, _, v1_reason, v1_payload), (_, _, _, page_reason, page_payload) = quarantined
            assert v1_reason == uk_problem
            assert v1_reason.startswith("settlement report header lacks amount-type, amount-description, amount;")
            v1_record = json.loads(v1_payload)
            assert v1_record["settlementId"] == "23456789012" and v1_record["document"] == V1_SETTLEMENT_UK
            assert v1_record["report"]["reportId"] == "54214019541"
            assert page_reason == settlement_format_problem(outage) and "settlement-id" in page_reason
            assert json.loads(page_payload)["document"] == outage and json.loads(page_payload)["settlementId"] is None
            documents = sorted(json.loads(p)["document"] for (p,) in landed)
            assert documents == sorted([us, de])
            assert all(parse_settlement_report(d).lines for d in documents)
    assert asked.count("/amazon/reports/2021-06-30/reports") == 4  # two pages, two runs


# ------------------------------------------------------------------ eBay payouts and their lines
EBAY_PAYOUT_EXTRACTS = [
    a for a in extract_assets if a.key.path[-1] in ("ebay_payouts", "ebay_payout_transactions")
]


def test_ebay_payout_transactions_land_each_payouts_lines_on_each_site(
    warehouse, warehouse_url, merchant_id, instance, vault_resource
):
    """The day's payouts (read first) name the payouts whose transactions are read by payoutId,
    on every site of the connection; each payout is the signed sum of its landed lines, but for
    the sandbox's deliberately short payout, short by what the sandbox says."""
    mid = merchant_id("ebpay")
    schema = merchant_schema(mid)
    sites = ("EBAY_US", "EBAY_DE")
    add_merchant(warehouse, mid, channels={"ebay": ChannelConnection("ebay", f"sandbox:{mid}", sites)})
    instance.add_dynamic_partitions(MERCHANTS, [mid])
    now = sandbox_now()
    with amazon_sandbox(now=now, history_start=now.date() - timedelta(days=120), finances_page_size=7) as sandbox:
        client = ebay_client(sandbox.base_url)
        # The latest day a US payout was dated, a day before the clock at least.
        plans = ebay_payout_plans_between(sandbox.state, mid, now - timedelta(days=30), now - timedelta(days=1))
        day = plans[-1].payout_date.date().isoformat()
        start, end = day_window(day, 2)
        payouts = {
            site: {p.payout_id: p for p in ebay_payout_plans_between(sandbox.state, mid, start, end, marketplace_id=site)}
            for site in sites
        }
        want = {
            t["transactionId"]: t
            for site in sites
            for pid in payouts[site]
            for t in ebay_payout_transactions(sandbox.state, mid, pid, marketplace_id=site)
        }
        short = {
            s.payout_id: s.missing
            for site in sites
            for s in ebay_short_payouts(sandbox.state, mid, start, end, marketplace_id=site)
        }
        assert want and all(t["transactionDate"] < end.strftime("%Y-%m-%dT%H:%M:%S") for t in want.values())
        for _ in range(2):  # the second run must change nothing
            result = dg.materialize(
                EBAY_PAYOUT_EXTRACTS,
                partition_key=merchant_date_key(mid, day),
                resources={"warehouse": WarehouseResource(url=warehouse_url), "ebay": client, "vault": vault_resource},
                instance=instance,
            )
            assert result.success
            (mat,) = result.asset_materializations_for_node("extracts__ebay_payout_transactions")
            assert mat.metadata["records"].value == len(want) and mat.metadata["quarantined"].value == 0
            assert mat.metadata["pii_values_sealed"].value > 0  # SALEs name the buyer
            assert _raw_keys(warehouse, mid, "raw_ebay_payout_transactions", day) == sorted(want)
            assert _raw_keys(warehouse, mid, "raw_ebay_payouts", day) == sorted(
                pid for site in sites for pid in payouts[site]
            )
    with warehouse.merchant_scope(mid) as conn:
        rows = conn.fetchall(
            f"SELECT CAST(payload AS TEXT) FROM {schema}.raw_ebay_payout_transactions WHERE partition_date = ?", [day]
        )
    landed = [json.loads(p) for (p,) in rows]
    for site in sites:
        for pid, plan in payouts[site].items():
            lines = [t for t in landed if t["payoutId"] == pid]
            signed = sum(
                (Decimal(str(t["amount"]["value"])) * (1 if t["bookingEntry"] == "CREDIT" else -1) for t in lines),
                Decimal(0),
            )
            assert signed + short.get(pid, Decimal(0)) == plan.amount, (site, pid)
