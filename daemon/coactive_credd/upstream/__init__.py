"""The upstream room: Coactive's ``POST /api/v0/login`` exchange (:mod:`.exchange`) and what of
Coactive's own text may be shown (:mod:`.redact`). aiohttp's client, and the core room."""
