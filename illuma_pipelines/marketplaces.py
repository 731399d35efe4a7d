"""The marketplaces ILLUMA connects, described once.

Every consumer reads this module instead of keeping its own list: the registry (which channels a
merchant may connect), the retention policy (which channels a rule may name), the PII purge (which
raw tables it redacts, and which JSON keys), the quality suites (the channel vocabulary), the
normalizers (dispatch by channel), the sandbox (which plug-ins it mounts) and, one level up, the
extract assets and the resources (tests/test_marketplaces.py holds each of them to this list).

No Dagster and no imports of the modules it names: normalizers and sandbox plug-ins are named by
module path and imported on use, so this module can sit below all of them.
"""

from __future__ import annotations

import importlib
import re
from dataclasses import dataclass
from types import ModuleType

# The dataset whose records are orders: their PII is dated by the order (its core row), every
# other dataset's by its extraction.
ORDER_DATASET = "orders"


class UnknownChannel(ValueError):
    """A channel name that is not one of the marketplaces below."""


@dataclass(frozen=True)
class Dataset:
    """One extracted dataset of a channel: its payloads land in `raw_<channel>_<name>`."""

    name: str
    # Whether its payloads may name the buyer: the PII purge redacts the channel's `pii_keys` in
    # the raw table of every such dataset.
    may_name_buyer: bool


@dataclass(frozen=True)
class Marketplace:
    channel: str  # lowercase; the registry's channel, the resource key, the raw table prefix
    title: str
    datasets: tuple[Dataset, ...]
    # String-valued JSON keys that hold buyer PII in this channel's payloads. The purge nulls every
    # such key's value (the rest of the payload stays byte for byte). Country codes are kept: they
    # are order facts (core_orders.country_code), not identifying on their own.
    pii_keys: tuple[str, ...]
    # Module with normalize_orders(records) and normalize_inventory(records, as_of=...).
    normalizer: str
    # Sandbox plug-in: a module exposing `routes(state)`, mounted under "/<channel>".
    sandbox: str
    # The shape of the channel's marketplace ids, as a channel connection names them (the
    # registry refuses another channel's: an Amazon id on eBay), and examples for the message.
    marketplace_id_pattern: str
    marketplace_id_examples: str

    def is_marketplace_id(self, value: str) -> bool:
        return re.fullmatch(self.marketplace_id_pattern, value) is not None

    def dataset(self, name: str) -> Dataset:
        for dataset in self.datasets:
            if dataset.name == name:
                return dataset
        raise KeyError(f"{self.channel} has no dataset {name!r}; known: {', '.join(d.name for d in self.datasets)}")

    def raw_table_name(self, dataset: str) -> str:
        return raw_table_name(self.channel, self.dataset(dataset).name)


def raw_table_name(channel: str, dataset: str) -> str:
    """The raw table of a channel's dataset in a merchant schema."""
    return f"raw_{channel}_{dataset}"


# Walmart's markets, named in the WM_MARKET header of the Global Marketplace APIs (same host;
# without the header Walmart serves the US).
WALMART_MARKETS = ("us", "ca", "mx", "cl")

MARKETPLACES: tuple[Marketplace, ...] = (
    Marketplace(
        channel="amazon",
        title="Amazon Selling Partner API",
        datasets=(
            Dataset("orders", may_name_buyer=True),
            Dataset("financial_transactions", may_name_buyer=True),
            Dataset("settlement_reports", may_name_buyer=True),
            Dataset("inventory", may_name_buyer=False),
            Dataset("competitive_pricing", may_name_buyer=False),
        ),
        pii_keys=(
            # Orders v2026-01-01: buyer, recipient.deliveryAddress, tax registration addresses
            "buyerName", "buyerEmail", "buyerCompanyName", "name", "companyName", "addressLine1",
            "addressLine2", "addressLine3", "city", "districtOrCounty", "municipality",
            "stateOrRegion", "postalCode", "phone", "complement", "neighborhood", "streetName",
            "streetNumber", "addressInstruction", "dropOffLocation", "giftMessage", "legalName",
            "taxRegistrationNumber",
            # Orders v0: BuyerInfo, ShippingAddress, gift messages
            "BuyerName", "BuyerEmail", "BuyerCounty", "CompanyLegalName", "Name", "AddressLine1",
            "AddressLine2", "AddressLine3", "City", "County", "District", "StateOrRegion",
            "PostalCode", "Phone", "GiftMessageText",
        ),
        normalizer="illuma_pipelines.normalize.amazon",
        sandbox="illuma_pipelines.sandbox.amazon",
        # Amazon's obfuscated marketplace ids: "A" and 9 to 14 capitals or digits.
        marketplace_id_pattern=r"A[A-Z0-9]{9,14}",
        marketplace_id_examples="ATVPDKIKX0DER (US), A1PA6795UKMFR9 (DE), A1F83G8C2ARO7P (UK)",
    ),
    Marketplace(
        channel="ebay",
        title="eBay Sell APIs",
        datasets=(
            Dataset("orders", may_name_buyer=True),
            Dataset("financial_transactions", may_name_buyer=True),
            Dataset("payouts", may_name_buyer=False),
            # The transactions each payout pays (getTransactions by payoutId): SALEs name the buyer.
            Dataset("payout_transactions", may_name_buyer=True),
            Dataset("inventory", may_name_buyer=False),
        ),
        pii_keys=(
            # Fulfillment: buyer, buyerRegistrationAddress, shipTo (contactAddress), checkout
            # notes; Finances transactions: buyer.username
            "username", "fullName", "email", "phoneNumber", "companyName", "addressLine1",
            "addressLine2", "city", "stateOrProvince", "county", "postalCode", "taxpayerId",
            "buyerCheckoutNotes",
        ),
        normalizer="illuma_pipelines.normalize.ebay",
        sandbox="illuma_pipelines.sandbox.ebay",
        # eBay's MarketplaceIdEnum: EBAY_US, EBAY_DE, EBAY_MOTORS_US...
        marketplace_id_pattern=r"EBAY_[A-Z][A-Z_]*[A-Z]",
        marketplace_id_examples="EBAY_US, EBAY_DE, EBAY_GB",
    ),
    Marketplace(
        channel="walmart",
        title="Walmart Marketplace",
        datasets=(
            Dataset("orders", may_name_buyer=True),
            Dataset("inventory", may_name_buyer=False),
            Dataset("settlement_reports", may_name_buyer=True),
        ),
        pii_keys=(
            # Orders: shippingInfo (phone, postalAddress), customerEmailId
            "customerEmailId", "phone", "name", "address1", "address2", "city", "state",
            "postalCode",
            # Reconciliation report rows: the ship-to location of each order line
            "Ship to City", "Ship to State", "Ship to Zipcode",
        ),
        normalizer="illuma_pipelines.normalize.walmart",
        sandbox="illuma_pipelines.sandbox.walmart",
        # The WM_MARKET values of Walmart's Global Marketplace APIs (the client checks the same).
        marketplace_id_pattern=f"(?i:{'|'.join(WALMART_MARKETS)})",
        marketplace_id_examples=", ".join(m.upper() for m in WALMART_MARKETS),
    ),
)

CHANNELS: tuple[str, ...] = tuple(m.channel for m in MARKETPLACES)
_BY_CHANNEL = {m.channel: m for m in MARKETPLACES}


def marketplace(channel: str) -> Marketplace:
    try:
        return _BY_CHANNEL[channel]
    except KeyError:
        raise UnknownChannel(f"unknown channel {channel!r}: choose one of {', '.join(CHANNELS)}") from None


def normalizer(channel: str) -> ModuleType:
    """The channel's normalizer module (imported on first use)."""
    return importlib.import_module(marketplace(channel).normalizer)


def all_pii_keys() -> tuple[str, ...]:
    """Every channel's PII keys, each once: what the purge's redaction pattern matches."""
    return tuple(dict.fromkeys(key for m in MARKETPLACES for key in m.pii_keys))


def raw_datasets(*, may_name_buyer: bool | None = None) -> list[tuple[str, str]]:
    """(channel, dataset) of every raw dataset, optionally only those that may (not) name the buyer."""
    return [
        (m.channel, d.name)
        for m in MARKETPLACES
        for d in m.datasets
        if may_name_buyer is None or d.may_name_buyer == may_name_buyer
    ]
