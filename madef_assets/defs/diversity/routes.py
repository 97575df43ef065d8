"""How many new prompts each generation route writes for a category (§3.5: thin categories are filled to
their quota by generation over several routes).

The rule, for one category: the deficit (quota minus train-eligible prompts, capped by
`method.augment_max_per_category`) is split evenly over the configured routes in their configured order,
the remainder one each to the first routes. A route never gets more than its capacity, the number of
distinct requests it can render (the ledger answers one request text once, so a repeated request would
only repeat a prompt); what a full route cannot take is split the same way over the routes that still
can, until the deficit is planned or every route is full.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from math import comb

FEWSHOT_EXAMPLES = 3  # a keyword few-shot request shows three example prompts


def route_capacity(zh_prompts: int, seed_examples: int, parents: int, attack_methods: int) -> dict[str, int]:
    """Distinct requests per route for a category with `zh_prompts` Chinese prompts, `seed_examples` examples
    of its own template and `parents` prompts to vary: keyword_fewshot one per set of three Chinese prompts
    (one, on the template's seed examples, when there are fewer than three), derived_question one per parent,
    attack_rewrite one per parent and attack method."""
    if zh_prompts >= FEWSHOT_EXAMPLES:
        fewshot = comb(zh_prompts, FEWSHOT_EXAMPLES)
    else:
        fewshot = int(zh_prompts + seed_examples >= FEWSHOT_EXAMPLES)
    return {"keyword_fewshot": fewshot, "derived_question": parents, "attack_rewrite": parents * attack_methods}


def split_deficit(deficit: int, routes: Sequence[str], capacity: Mapping[str, int]) -> dict[str, int]:
    """New prompts per route for one category's deficit: an even split in route order, the remainder one each
    to the first routes, no route above its capacity, the excess split again over the routes not yet full."""
    planned = {route: 0 for route in routes}
    left = max(deficit, 0)
    open_routes = [route for route in routes if capacity[route] > 0]
    while left and open_routes:
        share, remainder = divmod(left, len(open_routes))
        for index, route in enumerate(open_routes):
            take = min(share + (index < remainder), capacity[route] - planned[route])
            planned[route] += take
            left -= take
        open_routes = [route for route in open_routes if planned[route] < capacity[route]]
    return planned


def example_sets(prompts: Sequence[str], count: int, rng: random.Random) -> list[list[str]]:
    """`count` distinct sets of three of the prompts, each in a seeded random order (fewer than three prompts:
    all of them, once; the template's seed examples complete the set)."""
    if len(prompts) < FEWSHOT_EXAMPLES:
        return [rng.sample(list(prompts), len(prompts))][:count]
    seen: set[frozenset[int]] = set()
    sets = []
    while len(sets) < min(count, comb(len(prompts), FEWSHOT_EXAMPLES)):
        chosen = rng.sample(range(len(prompts)), FEWSHOT_EXAMPLES)
        if frozenset(chosen) not in seen:
            seen.add(frozenset(chosen))
            sets.append([prompts[i] for i in chosen])
    return sets
