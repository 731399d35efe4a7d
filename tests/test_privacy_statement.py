"""The quarterly privacy statement on both engines, from events made by the real code paths: a
merchant's buyer PII sealed by the vault, a key rotation (`rotate_merchant_keys`), a support read
and an export (`export_merchant`), two daily purges with crypto-shredding (`purge_and_shred`, what
the pii_purge asset runs) and rights requests (`request_deletion`, `withdraw_deletion`), each on a
controlled clock in the first quarter of 2026. The statement's figures are checked against what
happened, the PDF is read back with pypdf, and no PII value of the test is in it."""

import os
import re
from datetime import UTC, date, datetime, timedelta

import pypdf
import pytest

from illuma_pipelines.export import REVEAL_PURPOSE, export_merchant
from illuma_pipelines.key_rotation import rotate_merchant_keys
from illuma_pipelines.merchant_ids import merchant_schema
from illuma_pipelines.purge import request_deletion, withdraw_deletion
from illuma_pipelines.registry import add_merchant
from illuma_pipelines.reports.privacy import (
    PEOPLE,
    PIPELINE,
    PIPELINE_READ_ACTION,
    REVEAL_ACTION,
    PrivacyStatementError,
    privacy_figures,
    privacy_statement_data,
    quarter_bounds,
    render_privacy_pdf,
)
from illuma_pipelines.shredding import purge_and_shred
from illuma_pipelines.vault import FileKeyStore, LocalKeyring, Vault
from resources import vault as vault_resource_module
from resources.vault import audit_sink_for
from tests.test_purge import EMAIL, NAME, STREET, _seed, _setup

MERCHANT_NAME = "Harbor Brake Parts"
KEY_CREATED = datetime(2025, 10, 20, 9, tzinfo=UTC)  # the merchant's first key, a quarter before
ROTATION = datetime(2026, 1, 20, 4, tzinfo=UTC)  # 91 days and 19 hours later: due
RETIREMENT = datetime(2026, 1, 22, 4, tzinfo=UTC)  # the next run destroys the unused old version
SUPPORT_READ = datetime(2026, 1, 25, 14, tzinfo=UTC)
EXPORTED = datetime(2026, 1, 26, 10, tzinfo=UTC)  # expires 7 days later, 2 February
FIRST_PURGE = datetime(2026, 2, 7, 3, tzinfo=UTC)  # delivered 8 January + 30 days
SECOND_PURGE = datetime(2026, 2, 19, 3, tzinfo=UTC)  # W-1: cancelled 20 January + 30 days
DELETION_ASKED = datetime(2026, 3, 1, 9, tzinfo=UTC)
DELETION_WITHDRAWN = datetime(2026, 3, 3, 9, tzinfo=UTC)
SECOND_DELETION = datetime(2026, 3, 30, 12, tzinfo=UTC)  # still open when the quarter ends
NEXT_QUARTER_READ = datetime(2026, 4, 2, 8, tzinfo=UTC)
SUPPORT_ACTOR = "support:dana.okafor@illuma.example"
OWNER_ACTOR = "owner:pat.lindqvist@harbor.example"
SUPPORT_PURPOSE = "customer support: delivery query"
RETURNS_PURPOSE = "customer support: return query"
# Buyer PII the test writes (tests/test_purge.py's payloads), and the people who acted.
PII_VALUES = (NAME, EMAIL, STREET, "jane_buyer_77", "2085550100", "+1 208 555 0100", "Boise", "83702")
PEOPLE_VALUES = (SUPPORT_ACTOR, OWNER_ACTOR, "dana.okafor", "pat.lindqvist", "support:alice")


@pytest.fixture(autouse=True)
def _local_dirs(tmp_path, monkeypatch):
    # Export archives under tmp_path, never the project's var/.
    monkeypatch.setenv("ILLUMA_VAR_DIR", str(tmp_path / "var"))
    monkeypatch.setenv("ILLUMA_DATA_DIR", str(tmp_path / "var" / "data"))


class Clock:
    """The vault's clock: audit events and labelled keys are dated by it."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def _vault(warehouse, tmp_path, clock):
    store = FileKeyStore(tmp_path / "keys" / "keystore.json")
    return Vault(store, LocalKeyring([os.urandom(32)]), audit_sink=audit_sink_for(warehouse), clock=clock), store


def _seal_pii(warehouse, vault, mid, orders):
    """Replace the seeded placeholders of core_buyer_pii with the vault's ciphertexts of the
    buyer's name and email, bound to each row."""
    schema = merchant_schema(mid)
    with warehouse.merchant_scope(mid) as conn:
        for channel, oid in orders:
            record = f"{channel}:{oid}"
            name = vault.encrypt(mid, "core_buyer_pii", "buyer_name", record, NAME)
            email = vault.encrypt(mid, "core_buyer_pii", "buyer_email", record, EMAIL)
            conn.execute(
                f"UPDATE {schema}.core_buyer_pii SET buyer_name = ?, buyer_email = ? "
                "WHERE channel = ? AND marketplace_order_id = ?",
                [name, email, channel, oid],
            )


def _ciphertext(warehouse, mid, channel, oid, column):
    schema = merchant_schema(mid)
    with warehouse.merchant_scope(mid) as conn:
        return conn.fetchone(
            f"SELECT {column} FROM {schema}.core_buyer_pii WHERE channel = ? AND marketplace_order_id = ?",
            [channel, oid],
        )[0]


def _pdf_text(path) -> str:
    reader = pypdf.PdfReader(path)
    return "\n".join(page.extract_text() for page in reader.pages)


def _flat(text: str) -> str:
    return " ".join(text.split())


def _quarter_of_events(warehouse, tmp_path, mid):
    """Run the quarter: returns the vault, its key store and the export made."""
    clock = Clock(KEY_CREATED)
    vault, store = _vault(warehouse, tmp_path, clock)
    _setup(warehouse, mid)
    assert vault.create_key_version(mid, now=KEY_CREATED) == 1
    orders = [("amazon", "A-1"), ("walmart", "W-1"), ("ebay", "E-1"), ("amazon", "A-2")]
    _seed(warehouse, mid, "amazon", "A-1", shipped=datetime(2026, 1, 5, tzinfo=UTC),
          delivered=datetime(2026, 1, 8, 16, tzinfo=UTC))
    _seed(warehouse, mid, "walmart", "W-1", status="cancelled", updated=datetime(2026, 1, 20, 11, tzinfo=UTC))
    _seed(warehouse, mid, "ebay", "E-1", shipped=datetime(2026, 1, 10, tzinfo=UTC))
    _seed(warehouse, mid, "amazon", "A-2", status="unshipped")
    _seal_pii(warehouse, vault, mid, orders)

    # Key rotation: due (92 days); the 8 sealed values move to v2; two days on, v1 is destroyed.
    clock.now = ROTATION
    rotated = rotate_merchant_keys(vault, warehouse, mid, ROTATION, "schedule:key_rotation")
    assert (rotated["rotated_to"], rotated["reencrypted_values"]) == (2, 8)
    clock.now = RETIREMENT
    assert rotate_merchant_keys(vault, warehouse, mid, RETIREMENT, "schedule:key_rotation")["destroyed_versions"] == [1]

    # A support read of one value, then the merchant's export (one audited batch of 8 values).
    clock.now = SUPPORT_READ
    email = vault.reveal(mid, "core_buyer_pii", "buyer_email", "amazon:A-1",
                         _ciphertext(warehouse, mid, "amazon", "A-1", "buyer_email"),
                         actor=SUPPORT_ACTOR, purpose=SUPPORT_PURPOSE)
    assert email == EMAIL
    clock.now = EXPORTED
    export = export_merchant(warehouse, vault, mid, requested_by="support:alice", now=EXPORTED)
    assert export.pii_values_revealed == 8 and export.expires_at == datetime(2026, 2, 2, tzinfo=UTC)

    # The daily purge on the two due days: A-1's PII (and the expired export), then W-1's.
    for now, run in ((FIRST_PURGE, "purge-0207"), (SECOND_PURGE, "purge-0219")):
        clock.now = now
        result, _ = purge_and_shred(warehouse, vault, mid, now=now, run_id=run)
        assert result.total > 0

    # Rights requests: one deletion withdrawn two days later, one still open at the quarter's end.
    request_deletion(warehouse, mid, requested_by=OWNER_ACTOR, now=DELETION_ASKED)
    withdraw_deletion(warehouse, mid, requested_by=OWNER_ACTOR, now=DELETION_WITHDRAWN)
    request_deletion(warehouse, mid, requested_by=OWNER_ACTOR, now=SECOND_DELETION)

    # After the quarter: a read that the first quarter's statement must not count.
    clock.now = NEXT_QUARTER_READ
    vault.reveal(mid, "core_buyer_pii", "buyer_name", "ebay:E-1", _ciphertext(warehouse, mid, "ebay", "E-1", "buyer_name"),
                 actor=SUPPORT_ACTOR, purpose=RETURNS_PURPOSE)
    return vault, store, export


def test_quarter_bounds():
    assert quarter_bounds("2026-Q1") == (datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 4, 1, tzinfo=UTC))
    assert quarter_bounds("2026-Q4") == (datetime(2026, 10, 1, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC))
    for wrong in ("2026-Q5", "2026Q1", "2026-q1", "26-Q1", ""):
        with pytest.raises(PrivacyStatementError, match="YYYY-Qn"):
            quarter_bounds(wrong)


def test_reveal_actions_are_the_vault_resource_s():
    assert (REVEAL_ACTION, PIPELINE_READ_ACTION) == (
        vault_resource_module.REVEAL_ACTION, vault_resource_module.PIPELINE_READ_ACTION)


def test_statement_of_a_quarter_of_real_events(warehouse, merchant_id, tmp_path):
    mid = merchant_id("privacy")
    _, store, export = _quarter_of_events(warehouse, tmp_path, mid)

    s = privacy_statement_data(warehouse, mid, "2026-Q1", MERCHANT_NAME, store)
    assert (s.start, s.end, s.as_of) == (datetime(2026, 1, 1, tzinfo=UTC),) + (datetime(2026, 4, 1, tzinfo=UTC),) * 2
    assert not s.empty

    # Purges per rule: the rows each removed and the latest deadline met (the purge's own day).
    purges = {p.rule_id: (p.targets, p.rows, p.purges, p.latest_deadline_met, p.last_purged_at) for p in s.purges}
    assert purges == {
        "buyer_pii_amazon_delivery": (("core_buyer_pii",), 1, 1, date(2026, 2, 7), FIRST_PURGE),
        "raw_pii_amazon_delivery": (("raw_amazon_orders",), 1, 1, date(2026, 2, 7), FIRST_PURGE),
        "exports": (("exports",), 1, 1, date(2026, 2, 7), FIRST_PURGE),
        "buyer_pii_cancelled": (("core_buyer_pii",), 1, 1, date(2026, 2, 19), SECOND_PURGE),
        "raw_pii_cancelled": (("raw_walmart_orders",), 1, 1, date(2026, 2, 19), SECOND_PURGE),
    }
    assert s.pii_rows_purged == 5

    # Keys: v1 rotated out at 91 whole days and destroyed; v2 current, 70 days old at the quarter's end.
    keys = {k.version: (k.created_at, k.retired_at, k.destroyed_at, k.age_days, k.status, k.rotated_in) for k in s.keys}
    assert keys == {
        1: (KEY_CREATED, ROTATION, RETIREMENT, 91, "destroyed", False),
        2: (ROTATION, None, None, 70, "current", True),
    }
    assert s.rotations == 1 and s.values_reencrypted == 8
    # The purges moved the remaining values to keys that live as long as their data, and shredded
    # those that fell due; the figures are the key store's.
    versions = store.versions(mid)
    start, end = quarter_bounds("2026-Q1")
    labelled = {lk.kind: (lk.created, lk.destroyed, lk.live_at_end) for lk in s.labelled_keys}
    for kind in ("due", "hold"):
        mine = [v for v in versions if (v.label or "").startswith(f"{kind}:")]
        assert labelled[kind] == (
            sum(start <= v.created_at < end for v in mine),
            sum(v.destroyed_at is not None and start <= v.destroyed_at < end for v in mine),
            sum(v.destroyed_at is None or v.destroyed_at >= end for v in mine),
        )
    assert labelled["due"][1] >= 1 and labelled["hold"][0] >= 1

    # Rights requests: the export (answered at once), the withdrawn deletion (2 days), the open one.
    requests = [(r.kind, r.received_at, r.answered_at, r.outcome, r.on_time) for r in s.requests]
    assert requests == [
        ("export", EXPORTED, EXPORTED, "completed", True),
        ("deletion", DELETION_ASKED, DELETION_WITHDRAWN, "withdrawn", True),
        ("deletion", SECOND_DELETION, None, None, None),
    ]
    assert [r.answered_in_days for r in s.requests[:2]] == [0.0, 2.0]
    assert s.requests[2].deadline == SECOND_DELETION + timedelta(days=30)

    # The export: made, expired after 7 days, deleted by the first purge.
    ((made,),) = [s.exports]
    assert (made.ref, made.created_at, made.expires_at, made.deleted_at, made.rows, made.pii_values) == (
        export.export_id[:8], EXPORTED, datetime(2026, 2, 2, tzinfo=UTC), FIRST_PURGE, export.total_rows, 8)

    # Accesses by purpose: the support read and the export's batch; April's read is not counted.
    accesses = {(a.purpose, a.by): (a.events, a.values, a.refused) for a in s.accesses}
    assert accesses == {(SUPPORT_PURPOSE, PEOPLE): (1, 1, 0), (REVEAL_PURPOSE, PEOPLE): (1, 8, 0)}
    assert s.notes == ()

    figures = privacy_figures(s)
    assert figures["pii_rows_purged"] == "5" and figures["deadline:buyer_pii_cancelled"] == "2026-02-19"
    assert figures["key:v1:age_days"] == "91" and figures["pii_values_read"] == "9"

    # The PDF: two pages, each with the merchant's name, the quarter and its number; every figure
    # in it; no PII value and no person's name.
    path = render_privacy_pdf(s, tmp_path / "reports" / "privacy-2026-Q1.pdf")
    reader = pypdf.PdfReader(path)
    assert len(reader.pages) == 2
    for number, page in enumerate(reader.pages, start=1):
        text = _flat(page.extract_text())
        assert f"Privacy statement — {MERCHANT_NAME}" in text
        assert f"{MERCHANT_NAME} · 2026-Q1 · page {number} of 2" in text
        assert "2026-Q1 (2026-01-01 to 2026-03-31)" in text
    text = _flat(_pdf_text(path))
    assert "Buyer PII rows purged under the retention policy: 5" in text
    assert "Data key rotations: 1; values re-encrypted to the new key: 8" in text
    assert "Rights requests: 3, answered: 2, on time (within 30 days): 2" in text
    assert "Accesses to buyer PII: 2, values read: 9" in text
    for rule, (targets, rows, runs, deadline, last) in purges.items():
        assert re.search(
            rf"{rule} {targets[0]} {rows} {runs} {deadline.isoformat()} {last.date().isoformat()}", text
        ), rule
    assert re.search(r"v1 2025-10-20 2026-01-20 2026-01-22 91 destroyed", text)
    assert re.search(r"v2 2026-01-20 — — 70 current", text)
    assert re.search(rf"{s.requests[1].ref} deletion 2026-03-01 2026-03-31 2026-03-03 2.0 withdrawn on time", text)
    assert re.search(rf"{s.requests[2].ref} deletion 2026-03-30 2026-04-29 — — — open", text)
    assert re.search(rf"{made.ref} 2026-01-26 {made.rows} 8 2026-02-02 2026-02-07", text)
    assert re.search(rf"{re.escape(SUPPORT_PURPOSE)} {PEOPLE} 1 1 0", text)
    for value in figures.values():
        assert value in text
    assert RETURNS_PURPOSE not in text
    leaked = [v for v in (*PII_VALUES, *PEOPLE_VALUES, mid) if v.lower() in text.lower()]
    assert leaked == []
    raw = path.read_bytes()
    assert not [v for v in PII_VALUES if v.encode() in raw]

    # The next quarter, stated at its end: April's read, and the open request now overdue.
    q2 = privacy_statement_data(warehouse, mid, "2026-Q2", MERCHANT_NAME, store, as_of=datetime(2026, 7, 15, tzinfo=UTC))
    assert {(a.purpose, a.by): a.values for a in q2.accesses} == {(RETURNS_PURPOSE, PEOPLE): 1}
    assert [(r.received_at, r.answered_at) for r in q2.requests] == [(SECOND_DELETION, None)]
    assert q2.notes == (
        "The current key (v2) is 161 days old, past the 90-day rotation: it is rotated at the next key rotation run.",
        "1 rights request(s) passed their 30-day deadline unanswered.",
    )
    assert privacy_figures(q2)[f"request:{q2.requests[0].ref}:state"] == "overdue"
    assert [(k.version, k.age_days, k.status) for k in q2.keys] == [(2, 161, "current")]
    q2_text = _flat(_pdf_text(render_privacy_pdf(q2, tmp_path / "q2.pdf")))
    assert all(note in q2_text for note in q2.notes) and "overdue" in q2_text


def test_a_pipeline_read_is_told_apart_from_a_person_s(warehouse, merchant_id, tmp_path):
    mid = merchant_id("pipe")
    add_merchant(warehouse, mid)
    clock = Clock(datetime(2026, 5, 4, 6, tzinfo=UTC))
    vault, store = _vault(warehouse, tmp_path, clock)
    sealed = vault.encrypt(mid, "raw_ebay_orders", "payload", "E-9/fullName", NAME)
    vault.reveal_batch(mid, "raw_ebay_orders", [("E-9/fullName", "payload", sealed)] * 3,
                       actor="pipeline:core_orders", purpose="normalize raw payloads")
    clock.now = datetime(2026, 5, 5, tzinfo=UTC)
    with pytest.raises(Exception, match="failed authentication"):
        vault.reveal(mid, "raw_ebay_orders", "payload", "E-10/fullName", sealed, actor=SUPPORT_ACTOR, purpose="moved value")
    s = privacy_statement_data(warehouse, mid, "2026-Q2", MERCHANT_NAME, store, as_of=datetime(2026, 6, 1, tzinfo=UTC))
    assert [(a.purpose, a.by, a.events, a.values, a.refused) for a in s.accesses] == [
        ("moved value", PEOPLE, 1, 0, 1),
        ("normalize raw payloads", PIPELINE, 1, 3, 0),
    ]
    # A statement of the current quarter stands at its date: the key's age is counted to it.
    ((key,),) = [s.keys]
    assert (s.as_of, key.age_days, key.status, key.rotated_in) == (datetime(2026, 6, 1, tzinfo=UTC), 27, "current", False)
    with pytest.raises(PrivacyStatementError, match="has not begun"):
        privacy_statement_data(warehouse, mid, "2026-Q3", MERCHANT_NAME, store, as_of=datetime(2026, 6, 1, tzinfo=UTC))


def test_an_empty_quarter_renders_and_says_so(warehouse, merchant_id, tmp_path):
    mid = merchant_id("quiet")
    add_merchant(warehouse, mid, display_name=MERCHANT_NAME)
    store = FileKeyStore(tmp_path / "keys" / "keystore.json")
    s = privacy_statement_data(warehouse, mid, "2026-Q1", MERCHANT_NAME, store)
    assert s.empty and s.purges == s.keys == s.requests == s.exports == s.accesses == ()
    path = render_privacy_pdf(s, tmp_path / "empty.pdf")
    reader = pypdf.PdfReader(path)
    assert len(reader.pages) == 1
    text = _flat(reader.pages[0].extract_text())
    assert "Nothing was done with your buyers' data in 2026-Q1" in text
    assert f"{MERCHANT_NAME} · 2026-Q1 · page 1 of 1" in text
    for line in ("No purge removed anything this quarter.", "No data key was in use this quarter.",
                 "No rights request was open this quarter.", "No export of your data was made this quarter.",
                 "Nobody and nothing read your buyers' personal data this quarter."):
        assert line in text
