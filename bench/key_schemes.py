"""Which data key should a buyer PII value live under, so that the daily purge can make it
unreadable everywhere by destroying keys? Simulates a merchant's orders and counts, per scheme,
the work the purge does: values re-sealed (decrypted and encrypted again) and keys destroyed.

- landing: one key per merchant and landing day. When any value of a key falls due, the key must
  be destroyed that day, so every value of the key that is not due yet is re-sealed first.
- due: one key per merchant and due day (ADR 0007). A value whose due day is unknown waits under
  the day's hold key and is re-sealed by the next purge: to its due key once the order ships (or
  is cancelled), again only when its due day moves (an Amazon delivery moves it later), and to the
  next hold key while it stays undated.

The order lifecycle follows the sandbox's: ships 0-4 days after purchase (4% never ship and are
cancelled after 1-3 days); Amazon orders are delivered 2-7 days after shipment. Due days follow
the default policy: shipment + 90 days; Amazon delivery (else shipment) + 30 days; cancellation +
30 days.

    .venv/bin/python bench/key_schemes.py [--orders-per-day 2000] [--days 240]
"""

from __future__ import annotations

import argparse
import random
from collections import defaultdict
from dataclasses import dataclass


@dataclass
class Order:
    landed: int  # day index
    shipped: int | None
    delivered: int | None
    cancelled: int | None
    amazon: bool

    def due(self, today: int) -> int | None:
        """The due day as known on `today` (None while undated)."""
        dues = []
        if self.shipped is not None and self.shipped <= today:
            dues.append(self.shipped + 90)
            if self.amazon:
                anchor = self.delivered if self.delivered is not None and self.delivered <= today else self.shipped
                dues.append(anchor + 30)
        if self.cancelled is not None and self.cancelled <= today:
            dues.append(self.cancelled + 30)
        return min(dues) if dues else None


def simulate(orders_per_day: int, days: int, seed: int = 7) -> dict[str, dict[str, float]]:
    rng = random.Random(seed)
    orders: list[Order] = []
    for day in range(days):
        for _ in range(orders_per_day):
            amazon = rng.random() < 0.5
            if rng.random() < 0.04:
                orders.append(Order(day, None, None, day + rng.randint(1, 3), amazon))
                continue
            shipped = day + rng.choice((0, 1, 1, 2, 2, 3, 4))
            delivered = shipped + rng.randint(2, 7) if amazon else None
            orders.append(Order(day, shipped, delivered, None, amazon))

    # landing-day keys: on each day, every key holding a value due that day is destroyed, and its
    # values not yet due are re-sealed under a new key of the same landing day.
    landing_resealed = 0
    landing_destroyed = 0
    by_landing: dict[int, list[Order]] = defaultdict(list)
    for order in orders:
        by_landing[order.landed].append(order)
    live: dict[int, list[Order]] = {day: list(group) for day, group in by_landing.items()}
    for today in range(days):
        for day, group in list(live.items()):
            if day > today:
                continue
            due_now = [o for o in group if (o.due(today) or 10**9) <= today]
            if not due_now:
                continue
            remaining = [o for o in group if (o.due(today) or 10**9) > today]
            landing_destroyed += 1
            landing_resealed += len(remaining)
            live[day] = remaining

    # due-day keys with daily hold keys.
    due_resealed = 0
    due_keys_destroyed = 0
    label: dict[int, tuple[str, int]] = {}
    for today in range(days):
        for index, order in enumerate(orders):
            if order.landed > today:
                continue
            due = order.due(today)
            if due is not None and due <= today:
                label.pop(index, None)  # purged with its key
                continue
            target = ("due", due) if due is not None else ("hold", today)
            if label.get(index) != target:
                if index in label or order.landed < today:
                    due_resealed += 1
                label[index] = target
        due_keys_destroyed += 2  # one due day and one hold day per merchant and day
    values = len(orders)
    return {
        "landing": {"resealed_per_value": landing_resealed / values, "keys_destroyed_per_day": landing_destroyed / days},
        "due": {"resealed_per_value": due_resealed / values, "keys_destroyed_per_day": due_keys_destroyed / days},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--orders-per-day", type=int, default=500)
    parser.add_argument("--days", type=int, default=240)
    args = parser.parse_args()
    result = simulate(args.orders_per_day, args.days)
    print(f"{args.orders_per_day} orders a day for {args.days} days, one merchant")
    for scheme, figures in result.items():
        print(
            f"  keys per {scheme:<8} day: {figures['resealed_per_value']:.2f} re-seals per value, "
            f"{figures['keys_destroyed_per_day']:.1f} keys destroyed per day"
        )


if __name__ == "__main__":
    main()
