"""A seeded, reproducible simulation of a company's marketing, sent through the collector as websites and CRMs would.

- :mod:`simulator.model`: the pure model (journeys, touches, page views, forms, CRM stages, spend);
- :mod:`simulator.truth`: the ground truth of a run, as JSON lines;
- :mod:`simulator.senders`: the HTTP senders (events API, HubSpot / Pipedrive / generic webhooks, CSV import).
"""
