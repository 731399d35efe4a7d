"""One fee-category vocabulary for every channel's money, with the channel's own labels kept beside
it (issue 15).

`fee_category(channel, amount_type, amount_description)` maps one amount to a category;
a label no rule knows lands as `other` (the caller counts those, they are never dropped).
`transaction_kind(channel, transaction_type)` says what kind of movement a transaction is.

Which categories are what (read by the dbt models, `dbt_project/models/`):
- revenue: principal, shipping_charged, promotion (negative), reimbursement;
- tax that passes through: tax_collected, marketplace_withheld_tax (they cancel where the
  marketplace is the facilitator);
- fees: commission, fulfillment, shipping_label, storage, advertising, subscription,
  refund_administration, chargeback, other;
- the deposit bridge, never profit: reserve_held, reserve_released, transfer.
"""

from __future__ import annotations

import re

PRINCIPAL = "principal"
SHIPPING_CHARGED = "shipping_charged"
TAX_COLLECTED = "tax_collected"
WITHHELD_TAX = "marketplace_withheld_tax"
PROMOTION = "promotion"
COMMISSION = "commission"
FULFILLMENT = "fulfillment"
SHIPPING_LABEL = "shipping_label"
STORAGE = "storage"
ADVERTISING = "advertising"
SUBSCRIPTION = "subscription"
REFUND_ADMINISTRATION = "refund_administration"
REIMBURSEMENT = "reimbursement"
CHARGEBACK = "chargeback"
RESERVE_HELD = "reserve_held"
RESERVE_RELEASED = "reserve_released"
TRANSFER = "transfer"
OTHER = "other"

FEE_CATEGORIES = (
    PRINCIPAL, SHIPPING_CHARGED, TAX_COLLECTED, WITHHELD_TAX, PROMOTION, COMMISSION, FULFILLMENT,
    SHIPPING_LABEL, STORAGE, ADVERTISING, SUBSCRIPTION, REFUND_ADMINISTRATION, REIMBURSEMENT,
    CHARGEBACK, RESERVE_HELD, RESERVE_RELEASED, TRANSFER, OTHER,
)
REVENUE_CATEGORIES = (PRINCIPAL, SHIPPING_CHARGED, PROMOTION, REIMBURSEMENT)
TAX_CATEGORIES = (TAX_COLLECTED, WITHHELD_TAX)
FEE_ONLY_CATEGORIES = (
    COMMISSION, FULFILLMENT, SHIPPING_LABEL, STORAGE, ADVERTISING, SUBSCRIPTION,
    REFUND_ADMINISTRATION, CHARGEBACK, OTHER,
)
BRIDGE_CATEGORIES = (RESERVE_HELD, RESERVE_RELEASED, TRANSFER)

# What kind of movement a transaction is.
SALE, REFUND, FEE, ADJUSTMENT, RESERVE, PAYOUT, SUMMARY = (
    "sale", "refund", "fee", "adjustment", "reserve", "payout", "summary",
)
TRANSACTION_KINDS = (SALE, REFUND, FEE, ADJUSTMENT, RESERVE, PAYOUT, OTHER)


def _norm(label: str | None) -> str:
    """Case, spaces, dashes and underscores folded: 'FBA Per Unit Fulfillment Fee',
    'FBAPerUnitFulfillmentFee' and 'fba_per_unit_fulfillment_fee' compare equal."""
    return re.sub(r"[^a-z0-9]", "", (label or "").lower())


# Exact labels first (folded), per channel; then keyword rules shared by all channels.
_EXACT: dict[str, dict[str, str]] = {
    "amazon": {
        # V2 settlement amount-description and Finances 2024-06-19 breakdown types
        "principal": PRINCIPAL, "productcharges": PRINCIPAL, "giftwrap": PRINCIPAL,
        "shipping": SHIPPING_CHARGED, "shippingcharge": SHIPPING_CHARGED,
        "shippingcharges": SHIPPING_CHARGED,
        "tax": TAX_COLLECTED, "shippingtax": TAX_COLLECTED, "giftwraptax": TAX_COLLECTED,
        "commission": COMMISSION, "referralfee": COMMISSION, "variableclosingfee": COMMISSION,
        "fixedclosingfee": COMMISSION, "digitalservicesfee": COMMISSION,
        "refundcommission": REFUND_ADMINISTRATION,
        "fbaperunitfulfillmentfee": FULFILLMENT, "fbaperorderfulfillmentfee": FULFILLMENT,
        "fbaweightbasedfee": FULFILLMENT, "fbainboundtransportationfee": FULFILLMENT,
        "shippingchargeback": SHIPPING_LABEL, "shippinglabelpurchase": SHIPPING_LABEL,
        "storagefee": STORAGE, "fbastoragefee": STORAGE, "fbalongtermstoragefee": STORAGE,
        "storagerenewalbilling": STORAGE,
        "currentreserveamount": RESERVE_HELD, "previousreserveamountbalance": RESERVE_RELEASED,
        "subscriptionfee": SUBSCRIPTION, "subscription": SUBSCRIPTION,
        "costofadvertising": ADVERTISING, "transactiontotalamount": ADVERTISING,
        "chargebackrefund": CHARGEBACK, "atozguaranteeclaim": CHARGEBACK,
        "successfulchargeback": TRANSFER,
    },
    "ebay": {
        # Finances feeType / transactionType
        "sale": PRINCIPAL, "refund": PRINCIPAL,
        "finalvaluefee": COMMISSION, "finalvaluefeefixedperorder": COMMISSION,
        "internationalfee": COMMISSION, "regulatoryoperatingfee": COMMISSION,
        "belowstandardperformancefee": COMMISSION, "highitemnotasdescribedfee": COMMISSION,
        "adfee": ADVERTISING, "promotedlistingfee": ADVERTISING, "promotedlistingsfee": ADVERTISING,
        "subscriptionfee": SUBSCRIPTION, "storesubscriptionfee": SUBSCRIPTION,
        "ebaystoresubscriptionfee": SUBSCRIPTION,
        "shippinglabel": SHIPPING_LABEL,
        "dispute": CHARGEBACK, "paymentdisputefee": CHARGEBACK,
        "credit": REIMBURSEMENT, "transfer": TRANSFER, "withdrawal": TRANSFER,
        "ebaycollectedtax": WITHHELD_TAX,
    },
    "walmart": {
        # Reconciliation report Amount Type
        "productprice": PRINCIPAL, "itemprice": PRINCIPAL,
        "shippingprice": SHIPPING_CHARGED,
        "producttax": TAX_COLLECTED, "shippingtax": TAX_COLLECTED,
        "producttaxwithheld": WITHHELD_TAX, "shippingtaxwithheld": WITHHELD_TAX,
        "commissiononproduct": COMMISSION, "commissiononshipping": COMMISSION,
        "commissionrebate": COMMISSION,
        "wfsfulfillmentfee": FULFILLMENT, "wfsinboundtransportationfee": FULFILLMENT,
        "wfsstoragefee": STORAGE, "wfslongtermstoragefee": STORAGE,
        "shippinglabel": SHIPPING_LABEL, "walmartshippinglabel": SHIPPING_LABEL,
        "advertisingfee": ADVERTISING, "sponsoredproductsfee": ADVERTISING,
        "wfsreimbursement": REIMBURSEMENT, "reimbursement": REIMBURSEMENT,
        "chargeback": CHARGEBACK, "reserveheld": RESERVE_HELD, "reservereleased": RESERVE_RELEASED,
        "fundswithheldtocoverfuturerefunds": RESERVE_HELD, "reservecreditedback": RESERVE_RELEASED,
        "refundadministrationfee": REFUND_ADMINISTRATION,
    },
}

# Keyword rules (folded), in order: the first that matches wins.
_KEYWORDS: tuple[tuple[str, str], ...] = (
    ("withheld", WITHHELD_TAX),
    ("facilitatortax", WITHHELD_TAX),
    ("reserve", RESERVE_HELD),
    ("storage", STORAGE),
    ("advertis", ADVERTISING),
    ("subscription", SUBSCRIPTION),
    ("chargeback", CHARGEBACK),
    ("reimburse", REIMBURSEMENT),
    ("fulfil", FULFILLMENT),
    ("fba", FULFILLMENT),
    ("wfs", FULFILLMENT),
    ("label", SHIPPING_LABEL),
    ("commission", COMMISSION),
    ("referral", COMMISSION),
    ("promotion", PROMOTION),
    ("promo", PROMOTION),
    ("discount", PROMOTION),
    ("tax", TAX_COLLECTED),
    ("shipping", SHIPPING_CHARGED),
    ("principal", PRINCIPAL),
)

# Whole-amount-type rules: an Amazon `amount-type` that decides alone.
_AMAZON_TYPES = {
    "promotion": PROMOTION,
    "itemwithheldtax": WITHHELD_TAX,
    "costofadvertising": ADVERTISING,
}


def fee_category(channel: str, amount_type: str | None, description: str | None = None) -> tuple[str, bool]:
    """(category, known): `known` is False when no rule matched and the amount lands as `other`.

    Amazon settlement lines pass (amount-type, amount-description); Finances breakdowns their
    `/`-joined type path as `amount_type`; eBay the transaction type and fee type; Walmart the
    reconciliation report's Amount Type.
    """
    exact = _EXACT.get(channel, {})
    if channel == "amazon":
        decided = _AMAZON_TYPES.get(_norm(amount_type))
        if decided == PROMOTION:
            return PROMOTION, True
        if decided is not None:
            return decided, True
    for label in (description, amount_type.rsplit("/", 1)[-1] if amount_type else None, amount_type):
        found = exact.get(_norm(label))
        if found is not None:
            return found, True
    for label in (description, amount_type):
        folded = _norm(label)
        if not folded:
            continue
        for keyword, category in _KEYWORDS:
            if keyword in folded:
                if category == RESERVE_HELD and ("previous" in folded or "release" in folded):
                    return RESERVE_RELEASED, True
                return category, True
    return OTHER, False


_KINDS: dict[str, dict[str, str]] = {
    "amazon": {
        "order": SALE, "shipment": SALE, "refund": REFUND, "servicefee": FEE,
        "otherfee": FEE, "other": FEE, "otheramount": FEE, "otheramazonfee": FEE,
        "fbainventoryfee": FEE, "storagefee": FEE, "costofadvertising": FEE,
        "productadspayment": FEE,
        "adjustment": ADJUSTMENT, "fbainventoryreimbursement": ADJUSTMENT,
        "guaranteeclaim": ADJUSTMENT, "chargeback": ADJUSTMENT, "chargebackrefund": ADJUSTMENT,
        "previousreserveamountbalance": RESERVE, "currentreserveamount": RESERVE,
        "transfer": PAYOUT, "debtrecovery": PAYOUT,
    },
    "ebay": {
        "sale": SALE, "refund": REFUND, "shippinglabel": FEE, "nonsalecharge": FEE,
        "dispute": ADJUSTMENT, "credit": ADJUSTMENT, "adjustment": ADJUSTMENT,
        "transfer": PAYOUT, "withdrawal": PAYOUT, "loanrepayment": PAYOUT,
    },
    "walmart": {
        "sale": SALE, "refund": REFUND, "adjustment": ADJUSTMENT, "fee": FEE,
        "feereimbursement": ADJUSTMENT, "wfsfee": FEE, "reserve": RESERVE,
        "paymentsummary": PAYOUT, "releasereserve": RESERVE,
    },
}


def transaction_kind(channel: str, transaction_type: str | None) -> str:
    """sale, refund, fee, adjustment, reserve, payout or other, from the channel's type label."""
    folded = _norm(transaction_type)
    kind = _KINDS.get(channel, {}).get(folded)
    if kind is not None:
        return kind
    if "refund" in folded:
        return REFUND
    if "reserve" in folded:
        return RESERVE
    if "fee" in folded or "charge" in folded:
        return FEE
    return OTHER
