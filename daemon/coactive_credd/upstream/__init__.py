"""The upstream room: Coactive's ``POST /api/v0/login`` exchange (:mod:`.exchange`, the room's
front, which every caller imports from), what it is given (:mod:`.credential`), the connection
and its failures (:mod:`.connection`), Coactive's answer read (:mod:`.answers`), the failure
kinds (:mod:`.failures`), and what of Coactive's own text may be shown (:mod:`.redact`).
aiohttp's client, and the core room."""
