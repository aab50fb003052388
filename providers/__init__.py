"""The providers Sluice ships: ``demo``, ``ollama``, ``openai`` (and what builds on them).

The contract they implement (pieces, ``Finish``, ``Abort``, ``Provider``,
``Registry``) belongs to the core, in ``sluice.provider``; the core never
imports this package: ``app.create_app`` wires the providers in.
"""
