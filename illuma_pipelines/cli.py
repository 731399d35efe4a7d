"""`illuma`: the command line for the data team (merchants, runs, the sandbox, the demo)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from illuma_pipelines.backups import BackupError
from illuma_pipelines.backups.cli import add_backups_commands
from illuma_pipelines.demo import DemoError
from illuma_pipelines.environment import EnvironmentConfigError, warehouse_url
from illuma_pipelines.merchant_ids import InvalidMerchantId
from illuma_pipelines.placement import PlacedWarehouse, open_warehouse
from illuma_pipelines.registry import (
    CHANNELS,
    ChannelConnection,
    RegistryError,
    add_merchant,
    list_merchants,
    offboard_merchant,
    set_report_email,
)
from illuma_pipelines.warehouse import WarehouseError


def _warehouse(args: argparse.Namespace) -> PlacedWarehouse:
    """--warehouse-url if given, else the environment's warehouse: the one the Dagster assets use;
    with the warehouses merchants are placed in (ILLUMA_WAREHOUSES, ADR 0011)."""
    return open_warehouse(args.warehouse_url or warehouse_url())


def _parse_channel(text: str) -> tuple[str, ChannelConnection]:
    """`amazon=env:AMAZON_REFRESH_ACME[@ATVPDKIKX0DER,A2EUQ1WTGCTBG2]`; `amazon` alone: sandbox;
    `amazon@A1PA6795UKMFR9[,...]`: the sandbox in those marketplaces (a reference never holds @)."""
    head, _, mps = text.partition("@")
    name, _, ref = head.partition("=")
    return name, ChannelConnection(name, ref, tuple(m for m in mps.split(",") if m))


def _cmd_merchants_add(args: argparse.Namespace) -> int:
    channels = {}
    for text in args.channel or []:
        name, conn = _parse_channel(text)
        if not conn.credential_ref:
            conn = ChannelConnection(name, f"sandbox:{args.merchant_id}", conn.marketplace_ids)
        channels[name] = conn
    merchant = add_merchant(
        _warehouse(args),
        args.merchant_id,
        display_name=args.name,
        channels=channels,
        report_email=args.report_email,
        placement=args.warehouse,
        actor=f"cli:{os.environ.get('USER', 'unknown')}",
    )
    print(
        f"{merchant.merchant_id}: {merchant.status}; channels: {', '.join(merchant.channel_names) or 'none'}; "
        f"reports to: {merchant.report_email or 'nobody (rendered, not sent)'}; warehouse: {merchant.warehouse}"
    )
    return 0


def _cmd_merchants_set_report_email(args: argparse.Namespace) -> int:
    if (args.address is None) == (not args.clear):
        print("illuma: error: give the address, or --clear to stop sending reports", file=sys.stderr)
        return 2
    merchant = set_report_email(_warehouse(args), args.merchant_id, args.address, actor=_actor())
    if merchant.report_email:
        print(f"{merchant.merchant_id}: reports go to {merchant.report_email}")
    else:
        print(f"{merchant.merchant_id}: no report e-mail; reports are rendered, not sent")
    return 0


def _cmd_reports_resend(args: argparse.Namespace) -> int:
    from illuma_pipelines.environment import environment_name
    from illuma_pipelines.registry import get_merchant
    from illuma_pipelines.reports.delivery import DeliveryError
    from illuma_pipelines.reports.store import ReportStoreError, resend_report
    from resources import resources_for

    warehouse = _warehouse(args)
    merchant = get_merchant(warehouse, args.merchant_id)
    try:
        delivery = resources_for(environment_name())["delivery"].get()
        result = resend_report(
            warehouse,
            delivery,
            args.merchant_id,
            args.kind,
            args.period,
            actor=args.requested_by or _actor(),
            merchant_name=merchant.display_name,
        )
    except (DeliveryError, ReportStoreError) as exc:
        print(f"illuma: error: {exc}", file=sys.stderr)
        return 2
    if result is None:
        print(
            f"illuma: error: {args.merchant_id} has no report e-mail: set one first "
            f"(illuma merchants set-report-email {args.merchant_id} ADDRESS)",
            file=sys.stderr,
        )
        return 2
    print(
        f"{args.merchant_id}: {args.kind} report {args.period} to {merchant.report_email} via "
        f"{delivery.provider}: {result.status}"
        + (f", message {result.message_id}" if result.message_id else "")
        + (f" ({result.error})" if result.error else "")
        + " (recorded in the audit log)"
    )
    return 0 if result.status == "sent" else 1


def _cmd_warehouse_provision(args: argparse.Namespace) -> int:
    # The main warehouse, and each one merchants can be placed in (ADR 0011).
    for line in _warehouse(args).provision():
        print(line)
    return 0


def _cmd_merchants_list(args: argparse.Namespace) -> int:
    merchants = list_merchants(_warehouse(args), status=args.status)
    if not merchants:
        print("no merchants registered")
        return 0
    print(f"{'merchant':<28} {'status':<11} {'since':<11} {'warehouse':<10} channels")
    for m in merchants:
        print(
            f"{m.merchant_id:<28} {m.status:<11} {m.created_at:%Y-%m-%d} {m.warehouse:<10} "
            f"{', '.join(m.channel_names) or '-'}"
        )
    return 0


def _cmd_merchants_offboard(args: argparse.Namespace) -> int:
    merchant = offboard_merchant(
        _warehouse(args),
        args.merchant_id,
        actor=f"cli:{os.environ.get('USER', 'unknown')}",
    )
    print(f"{merchant.merchant_id}: {merchant.status} at {merchant.offboarded_at:%Y-%m-%d %H:%M} UTC")
    return 0


def _cmd_merchants_export(args: argparse.Namespace) -> int:
    from pathlib import Path

    from illuma_pipelines.export import ExportError, export_merchant
    from illuma_pipelines.registry import get_merchant
    from illuma_pipelines.vault import MasterKeyError, VaultError
    from resources.vault import VaultResource

    warehouse = _warehouse(args)
    get_merchant(warehouse, args.merchant_id)  # unknown merchant: fail before touching the keys
    try:
        # An export never creates key material: without a master key nothing was ever encrypted,
        # and the export says so if it meets a ciphertext anyway.
        try:
            vault = VaultResource(generate_master_key=False).get(warehouse)
        except MasterKeyError:
            vault = None
        result = export_merchant(
            warehouse,
            vault,
            args.merchant_id,
            requested_by=args.requested_by or _actor(),
            out_dir=Path(args.out) if args.out else None,
        )
    except (ExportError, VaultError) as exc:
        print(f"illuma: error: {exc}", file=sys.stderr)
        return 2
    print(f"archive: {result.path}")
    print(f"sha256: {result.sha256}")
    print(f"expires: {result.expires_at:%Y-%m-%d %H:%M} UTC (deleted then by the retention purge)")
    print(
        f"rows: {result.total_rows} in {len(result.row_counts)} tables; PII values decrypted: "
        f"{result.pii_values_revealed}, left out as past retention: {result.pii_values_withheld}"
    )
    width = max(len(name) for name in result.row_counts)
    for name, count in result.row_counts.items():
        print(f"  {name:<{width}} {count}")
    return 0


def _actor() -> str:
    return f"cli:{os.environ.get('USER', 'unknown')}"


def _cmd_merchants_request_deletion(args: argparse.Namespace) -> int:
    from illuma_pipelines.purge import request_deletion

    request = request_deletion(
        _warehouse(args),
        args.merchant_id,
        immediate=args.immediate,
        requested_by=args.requested_by or _actor(),
    )
    print(
        f"{request['merchant_id']}: {request['kind']} request {request['request_id']} received "
        f"{request['received_at']:%Y-%m-%d %H:%M} UTC; answer due by {request['deadline']:%Y-%m-%d} "
        f"(30 days); account offboarded, erasure due from {request['erasure_due_at']:%Y-%m-%d %H:%M} UTC "
        "(the erasure sensor starts it)"
    )
    return 0


def _cmd_merchants_withdraw_deletion(args: argparse.Namespace) -> int:
    from illuma_pipelines.purge import withdraw_deletion

    withdrawn = withdraw_deletion(_warehouse(args), args.merchant_id, requested_by=args.requested_by)
    print(
        f"{withdrawn['merchant_id']}: {withdrawn['kind'].replace('_', ' ')} request {withdrawn['request_id']} "
        f"(received {withdrawn['received_at']:%Y-%m-%d %H:%M} UTC) withdrawn at "
        f"{withdrawn['withdrawn_at']:%Y-%m-%d %H:%M} UTC on behalf of {args.requested_by}; the account is "
        "active again and will not be erased (recorded in the rights requests and the audit log)"
    )
    return 0


def _cmd_merchants_retention_override(args: argparse.Namespace) -> int:
    from illuma_pipelines.purge import set_retention_override
    from illuma_pipelines.retention import RetentionError

    try:
        policy = set_retention_override(
            _warehouse(args), args.merchant_id, args.rule_id, args.period, actor=_actor()
        )
    except RetentionError as exc:
        print(f"illuma: error: {exc}", file=sys.stderr)
        return 2
    overrides = ", ".join(f"{rule}={period}" for rule, period in sorted(policy.overrides.items()))
    print(f"{args.merchant_id}: retention overrides {overrides} (policy {policy.version}, {policy.fingerprint()})")
    return 0


def _cmd_merchants_purge_report(args: argparse.Namespace) -> int:
    from illuma_pipelines.purge import purge_report

    rows = purge_report(_warehouse(args), args.merchant_id)
    if not rows:
        print(f"{args.merchant_id}: nothing purged yet")
        return 0
    print(f"{'purged at (UTC)':<17} {'rule':<26} {'rows':>8}  target")
    for r in rows:
        print(f"{r['purged_at']:%Y-%m-%d %H:%M} {r['rule_id']:<26} {r['rows_affected']:>8}  {r['target']}")
    return 0


def _cmd_merchants_catalog_import(args: argparse.Namespace) -> int:
    from datetime import datetime

    from illuma_pipelines.catalog import CatalogFileError, import_catalog_file

    effective = None
    if args.effective_from:
        try:
            effective = datetime.fromisoformat(args.effective_from)
        except ValueError:
            effective = None
        if effective is None or effective.tzinfo is None:
            print(
                f"illuma: error: --effective-from {args.effective_from!r} is not an ISO 8601 time with an "
                "offset, e.g. 2026-03-01T00:00:00+00:00",
                file=sys.stderr,
            )
            return 2
    try:
        summary = import_catalog_file(_warehouse(args), args.merchant_id, args.file, effective_at=effective)
    except (CatalogFileError, OSError) as exc:
        print(f"illuma: error: {exc}; nothing of {args.file} was loaded", file=sys.stderr)
        return 2
    print(summary.describe())
    return 0


def _cmd_merchants_pricing_rule(args: argparse.Namespace) -> int:
    from illuma_pipelines.pricing import (
        PricingRuleError,
        delete_pricing_rule,
        import_pricing_rules_file,
        make_rule,
        pricing_rules,
        set_pricing_rule,
    )

    wh = _warehouse(args)
    try:
        if args.file:
            rules = import_pricing_rules_file(wh, args.merchant_id, args.file, actor=_actor())
            print(f"{args.merchant_id}: {len(rules)} pricing rule(s) applied from {args.file}")
        elif args.delete:
            removed = delete_pricing_rule(wh, args.merchant_id, sku=args.sku, part_type=args.part_type, actor=_actor())
            print(f"{args.merchant_id}: {'rule removed' if removed else 'no such rule'}")
        elif args.strategy:
            if not (args.sku or args.part_type):
                raise PricingRuleError("name the SKU (--sku) or part type (--part-type, `*` for every part) the rule is for")
            rule = set_pricing_rule(
                wh, args.merchant_id,
                make_rule(
                    sku=args.sku, part_type=args.part_type, strategy=args.strategy, beat_by=args.beat_by,
                    min_margin_percent=args.min_margin, referral_fee_percent=args.referral_fee,
                    fulfillment_fee=args.fulfillment_fee, currency=args.currency,
                ),
                actor=_actor(),
            )
            print(f"{args.merchant_id}: {rule.describe()} set")
        elif any(v is not None for v in (args.sku, args.part_type, args.beat_by, args.min_margin, args.referral_fee, args.currency)):
            raise PricingRuleError("--strategy is required to set a rule (or --delete to remove one)")
    except (PricingRuleError, OSError) as exc:
        print(f"illuma: error: {exc}", file=sys.stderr)
        return 2
    rules = pricing_rules(wh, args.merchant_id)
    if not rules:
        print(f"{args.merchant_id}: no pricing rules (no recommendation is made without one)")

    def num(value):
        return f"{value.normalize():f}"

    for r in rules:
        beat = num(r.beat_by_amount) if r.beat_by_amount is not None else (
            f"{num(r.beat_by_percent)}%" if r.beat_by_percent is not None else "-"
        )
        print(
            f"  {r.scope:<9} {r.target:<24} {r.strategy:<22} beat_by={beat} margin={num(r.min_margin_percent)}% "
            f"referral={num(r.referral_fee_percent)}% fulfillment_fee={num(r.fulfillment_fee)}"
            f"{' ' + r.currency if r.currency else ''} ({r.source}, {r.updated_by})"
        )
    return 0


def _cmd_requests(args: argparse.Namespace) -> int:
    from datetime import UTC, datetime

    from illuma_pipelines.purge import late_requests, requests_report

    rows = requests_report(_warehouse(args), datetime.now(UTC), include_done=args.all)
    if not rows:
        print("no open rights requests")
        return 0
    print(f"{'status':<9} {'deadline':<10} {'kind':<19} {'merchant':<28} {'request':<32} outcome")
    for r in rows:
        print(
            f"{r['status']:<9} {r['deadline']:%Y-%m-%d} {r['kind']:<19} {r['merchant_id']:<28} "
            f"{r['request_id']:<32} {r['outcome'] or '-'}"
        )
    late = late_requests(rows)
    # Non-zero exit when any request is near or past its deadline, for cron-style alerting.
    return 1 if late else 0


def _instance():
    """The Dagster instance the commands work on: the project-local one, as `make demo` and
    `make ui` use it (created if missing), or in production DAGSTER_HOME's."""
    import dagster as dg

    from illuma_pipelines.demo import instance_home

    instance_home()
    return dg.DagsterInstance.get()


def _cmd_sync_partitions(args: argparse.Namespace) -> int:
    from sensors.merchants import sync_merchant_partitions

    changes = sync_merchant_partitions(_instance(), _warehouse(args))

    def shown(keys: list[str]) -> str:
        return ", ".join(keys) or "-"

    print(f"added: {shown(changes.to_add)}; retired: {shown(changes.to_remove)}; waiting: {shown(changes.waiting)}")
    if changes.invalid_note():
        print(changes.invalid_note())
    return 0


def _cmd_runs_recover(args: argparse.Namespace) -> int:
    from sensors.runs import recover_dead_runs

    checks = recover_dead_runs(_instance())
    for check in checks:
        print(check.line())
    if not any(c.cleaned for c in checks):
        print("no run left behind by a dead process")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from illuma_pipelines.demo import run_demo

    return run_demo(days=args.days)


def _sandbox_config(args: argparse.Namespace):
    """The `SandboxConfig` the serve flags describe (fault rates, quotas, token lifetime)."""
    from illuma_pipelines.sandbox.faults import FAULT_KINDS, FaultConfig
    from illuma_pipelines.sandbox.server import SandboxConfig

    timing = {
        "seed": args.fault_seed,
        "timeout_seconds": args.fault_timeout_seconds,
        "retry_after_seconds": args.retry_after_seconds,
    }
    rates = {kind: getattr(args, f"fault_{kind}") for kind in FAULT_KINDS}
    if args.faults is not None:
        chosen = {kind: rate for kind, rate in rates.items() if rate is not None}
        if chosen:
            raise SandboxFlagError(
                f"--faults spreads one rate over every kind; drop it or the per-kind flags "
                f"({', '.join('--fault-' + k.replace('_', '-') for k in chosen)})"
            )
        faults = FaultConfig.mixed(args.faults, **timing)
    else:
        faults = FaultConfig(**{k: r or 0.0 for k, r in rates.items()}, **timing)
    return SandboxConfig(
        seed=args.seed,
        faults=faults,
        enforce_quotas=args.enforce_quotas,
        quota_speedup=args.quota_speedup,
        access_token_lifetime=args.token_lifetime,
    )


class SandboxFlagError(ValueError):
    """`illuma sandbox serve` flags that contradict each other or are out of range."""


def _cmd_sandbox_serve(args: argparse.Namespace) -> int:
    import logging

    from illuma_pipelines.sandbox.server import serve

    try:
        config = _sandbox_config(args)
    except ValueError as exc:
        print(f"illuma: error: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    serve(host=args.host, port=args.port, config=config)
    return 0


def _rate(text: str) -> float:
    """A probability per request, 0 to 1."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text} is not a rate between 0 and 1")
    return value


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text} must be greater than 0")
    return value


_FAULT_HELP = {
    "throttle": "429 with Retry-After, then 0-2 more 429s for that caller and operation",
    "server_error": "500 or 503 with the marketplace's error body",
    "timeout": "answer held --fault-timeout-seconds, longer than a client's read timeout",
    "connection_reset": "headers sent, then the connection dropped",
    "truncated_body": "body cut short (short Content-Length or cut JSON)",
    "malformed_record": "one broken copy of a record added to list pages",
    "expired_token": "a valid access token answered as expired (and revoked)",
}


def _cmd_prod(args: argparse.Namespace) -> int:
    from illuma_pipelines.prod import run_action

    return run_action(args.action)


def _cmd_instance_home(args: argparse.Namespace) -> int:
    from illuma_pipelines.demo import ensure_local_instance_home

    print(ensure_local_instance_home())
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="illuma", description=__doc__)
    parser.add_argument(
        "--warehouse-url",
        default=None,
        help="warehouse URL (default: the environment's, as for the Dagster assets: "
        "ILLUMA_WAREHOUSE_URL, else the project-local DuckDB file; required with ILLUMA_ENV=production)",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    merchants = sub.add_parser("merchants", help="the merchant registry").add_subparsers(
        dest="action", required=True
    )
    add = merchants.add_parser("add", help="register a merchant and connect its channels")
    add.add_argument("merchant_id")
    add.add_argument("--name", help="display name")
    add.add_argument(
        "--channel",
        action="append",
        metavar="CHANNEL[=REF][@MARKETPLACES]",
        help=f"connect a channel ({', '.join(CHANNELS)}); REF is env:VAR or sandbox:<id> "
        "(default: the local sandbox); MARKETPLACES the channel's ids, comma-separated (e.g. "
        "amazon@A1PA6795UKMFR9,A1F83G8C2ARO7P, ebay=env:EBAY_REFRESH_ACME@EBAY_DE, walmart@US,CA); "
        "repeat for more channels",
    )
    add.add_argument(
        "--report-email",
        metavar="ADDRESS",
        help="where the merchant's reports are sent (without one they are rendered, not sent)",
    )
    add.add_argument(
        "--warehouse",
        metavar="NAME",
        help="the warehouse that holds the merchant's data: main (ILLUMA_WAREHOUSE_URL, the default "
        "for a new merchant) or a name from ILLUMA_WAREHOUSES; a merchant with data is never moved",
    )
    add.set_defaults(func=_cmd_merchants_add)
    email = merchants.add_parser(
        "set-report-email",
        help="set the address the merchant's reports are sent to (audited; setting an address the "
        "provider suppressed lifts the suppression), or --clear to stop sending them",
    )
    email.add_argument("merchant_id")
    email.add_argument("address", nargs="?", help="a bare e-mail address, e.g. reports@acme-parts.com")
    email.add_argument("--clear", action="store_true", help="remove the address: reports are rendered, not sent")
    email.set_defaults(func=_cmd_merchants_set_report_email)
    ls = merchants.add_parser("list", help="list merchants and their channels")
    ls.add_argument("--status", choices=["active", "offboarded"])
    ls.set_defaults(func=_cmd_merchants_list)
    off = merchants.add_parser("offboard", help="stop a merchant's pipelines (data kept until erasure)")
    off.add_argument("merchant_id")
    off.set_defaults(func=_cmd_merchants_offboard)
    export = merchants.add_parser(
        "export",
        help="export everything held on a merchant to a zip archive (Parquet + CSV per table, "
        "manifest; PII decrypted; expires under the retention rules)",
    )
    export.add_argument("merchant_id")
    export.add_argument("--out", metavar="DIR", help="folder for the archive (default: <data dir>/exports/<id>/)")
    export.add_argument("--requested-by", metavar="NAME", help="who asked (audit log; default: cli:$USER)")
    export.set_defaults(func=_cmd_merchants_export)
    delete = merchants.add_parser(
        "request-deletion",
        help="record a deletion request and terminate the account: its data is erased 30 days "
        "later, or at once with --immediate",
    )
    delete.add_argument("merchant_id")
    delete.add_argument("--immediate", action="store_true", help="skip the 30-day grace period")
    delete.add_argument("--requested-by", metavar="NAME", help="who asked (audit log; default: cli:$USER)")
    delete.set_defaults(func=_cmd_merchants_request_deletion)
    override = merchants.add_parser(
        "retention-override",
        help="shorten a retention maximum (or lengthen a minimum) for one merchant, e.g. "
        "buyer_pii_shipment 60d",
    )
    override.add_argument("merchant_id")
    override.add_argument("rule_id")
    override.add_argument("period", help="e.g. 60d, 6mo, 10y")
    override.set_defaults(func=_cmd_merchants_retention_override)
    withdraw = merchants.add_parser(
        "withdraw-deletion",
        help="withdraw a merchant's pending deletion request (audited): the account is active again "
        "and is not erased; refused once the erasure has begun",
    )
    withdraw.add_argument("merchant_id")
    withdraw.add_argument(
        "--requested-by", metavar="NAME", required=True, help="who asked to withdraw it (audit log)"
    )
    withdraw.set_defaults(func=_cmd_merchants_withdraw_deletion)
    report = merchants.add_parser("purge-report", help="what the retention purges removed, rule by rule")
    report.add_argument("merchant_id")
    report.set_defaults(func=_cmd_merchants_purge_report)
    catalog = merchants.add_parser(
        "catalog", help="the merchant's parts catalog (costs, fitment, supersessions)"
    ).add_subparsers(dest="catalog_action", required=True)
    imp = catalog.add_parser(
        "import",
        help="load a catalog file (CSV or XLSX) now, as the catalog inbox sensor does for files "
        "dropped in the inbox, and print what it loaded; the same file loads once",
    )
    imp.add_argument("merchant_id")
    imp.add_argument("file", help="path of the CSV or XLSX file")
    imp.add_argument(
        "--effective-from",
        metavar="TIME",
        help="when the file's costs took effect (ISO 8601 with offset; default: now)",
    )
    imp.set_defaults(func=_cmd_merchants_catalog_import)
    pricing = merchants.add_parser(
        "pricing-rule",
        help="set, delete or list a merchant's repricing rules (per SKU or part type; `*`: every part), "
        "or apply a pricing_rules CSV file; with no rule options, list the rules",
    )
    pricing.add_argument("merchant_id")
    target = pricing.add_mutually_exclusive_group()
    target.add_argument("--sku", help="the rule applies to this SKU (wins over its part type's rule)")
    target.add_argument("--part-type", help="the rule applies to every SKU of this catalog part_type (`*`: every part)")
    target.add_argument("--file", type=Path, help="apply a pricing_rules CSV file (all rows or none)")
    pricing.add_argument("--strategy", choices=["match_buy_box", "beat_lowest_by", "stay_at_max_when_alone"])
    pricing.add_argument("--beat-by", help="beat_lowest_by: an amount (0.50) or a percent (2%%)")
    pricing.add_argument("--min-margin", help="minimum margin over landed cost, percent (e.g. 15)")
    pricing.add_argument("--referral-fee", help="marketplace referral fee, percent of the price (e.g. 15)")
    pricing.add_argument("--fulfillment-fee", help="per-unit fulfillment fee (default 0)")
    pricing.add_argument("--currency", help="currency of --beat-by and --fulfillment-fee amounts (default: the offer's)")
    pricing.add_argument("--delete", action="store_true", help="remove the rule of --sku or --part-type")
    pricing.set_defaults(func=_cmd_merchants_pricing_rule)
    sync = merchants.add_parser(
        "sync-partitions",
        help="apply the merchants sensor's plan to the Dagster instance now (the project-local "
        "one unless DAGSTER_HOME names another): add new merchants, retire erased ones, remove "
        "partition keys that are not merchant ids",
    )
    sync.set_defaults(func=_cmd_sync_partitions)

    runs = sub.add_parser("runs", help="the Dagster instance's runs").add_subparsers(dest="action", required=True)
    recover = runs.add_parser(
        "recover",
        help="mark failed the runs whose process is gone (killed, crashed) and free their pool "
        "slots; live runs are only reported (make demo and make ui do this first)",
    )
    recover.set_defaults(func=_cmd_runs_recover)

    reports = sub.add_parser("reports", help="merchant reports").add_subparsers(dest="action", required=True)
    resend = reports.add_parser(
        "resend",
        help="send a rendered report again to the merchant's report e-mail, through the environment's "
        "delivery (local: the outbox; production: Postmark); audited",
    )
    resend.add_argument("merchant_id")
    resend.add_argument("kind", choices=["monthly", "settlement", "privacy"])
    resend.add_argument("period", help="e.g. 2026-03 (monthly), 2026-Q1 (privacy), the settlement's period")
    resend.add_argument("--requested-by", metavar="NAME", help="who asked (audit log; default: cli:$USER)")
    resend.set_defaults(func=_cmd_reports_resend)

    requests = sub.add_parser(
        "requests", help="rights requests and their 30-day deadlines (exit 1 if any is due soon or late)"
    )
    requests.add_argument("--all", action="store_true", help="include completed requests")
    requests.set_defaults(func=_cmd_requests)

    demo = sub.add_parser("demo", help="onboard demo merchants and materialize a few days")
    demo.add_argument("--days", type=int, default=3)
    demo.set_defaults(func=_cmd_demo)
    sandbox = sub.add_parser("sandbox", help="the local marketplace sandbox").add_subparsers(
        dest="action", required=True
    )
    serve = sandbox.add_parser("serve", help="serve the Amazon, eBay and Walmart sandbox APIs")
    serve.add_argument("--host", default="127.0.0.1", help="bind address (loopback by default)")
    serve.add_argument("--port", type=int, default=8765)
    serve.add_argument("--seed", type=int, default=7, help="world seed: same seed, same data")
    faults = serve.add_argument_group(
        "faults", "probability per request of each fault (0 to 1; their sum at most 1; default none)"
    )
    faults.add_argument(
        "--faults", type=_rate, metavar="RATE", help="RATE of faults, spread evenly over every kind"
    )
    for kind, what in _FAULT_HELP.items():
        faults.add_argument(f"--fault-{kind.replace('_', '-')}", type=_rate, metavar="RATE", help=what)
    faults.add_argument(
        "--fault-seed", type=int, default=0, help="seed of the fault draws (same seed and request order, same faults)"
    )
    faults.add_argument(
        "--fault-timeout-seconds", type=_positive, default=2.0, metavar="S", help="how long a timeout fault holds (2)"
    )
    faults.add_argument(
        "--retry-after-seconds", type=_positive, default=1.0, metavar="S", help="Retry-After of a throttle fault (1)"
    )
    quotas = serve.add_argument_group("quotas")
    quotas.add_argument(
        "--enforce-quotas",
        action="store_true",
        help="answer 429 when a caller exceeds an operation's documented rate and burst",
    )
    quotas.add_argument(
        "--quota-speedup",
        type=_positive,
        default=1.0,
        metavar="X",
        help="multiply every documented rate by X (1000: quotas in seconds, not hours; rate-limit "
        "headers report the sped-up rate, so clients need the same rate_speedup)",
    )
    quotas.add_argument(
        "--token-lifetime", type=_positive, default=3600.0, metavar="S", help="access token lifetime in seconds (3600)"
    )
    serve.set_defaults(func=_cmd_sandbox_serve)
    wh = sub.add_parser("warehouse", help="the merchant warehouse").add_subparsers(dest="action", required=True)
    provision = wh.add_parser(
        "provision",
        help="create or update the platform schema, its guards and the pipeline's non-superuser "
        "login, through the admin connection (PostgreSQL: ILLUMA_WAREHOUSE_ADMIN_URL)",
    )
    provision.set_defaults(func=_cmd_warehouse_provision)
    prod = sub.add_parser(
        "prod",
        help="the production topology on this machine (make prod-up/prod-down): code server, webserver, "
        "daemon and sandbox on PostgreSQL; ports and folder from ILLUMA_PROD_* (README, Production)",
    )
    prod.add_argument("action", choices=["up", "down", "status", "env"], help="env: shell exports for illuma commands")
    prod.set_defaults(func=_cmd_prod)
    home = sub.add_parser(
        "instance-home", help="create the project-local Dagster home if missing, or bring its dagster.yaml up to date"
    )
    home.set_defaults(func=_cmd_instance_home)
    add_backups_commands(sub, _warehouse)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (BackupError, DemoError, EnvironmentConfigError, InvalidMerchantId, RegistryError, WarehouseError) as exc:
        print(f"illuma: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
