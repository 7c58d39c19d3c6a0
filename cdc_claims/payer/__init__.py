"""What the payer (openIMIS) knows, read before a claim is sent.

``catalogue`` and ``checks`` are pure: the health facilities with their pricelists, the medical
items and services, claim admins, the ICD list and insurees' policies as values, and the rules a
claim must pass against them (``not_in_pricelist``, ``price_above_pricelist``,
``no_active_policy``). ``compare`` checks a mapping file against a catalogue. ``graphql`` is the
adapter that reads them from openIMIS; ``cache`` keeps them fresh off the latency path.
"""
