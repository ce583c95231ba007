"""The testing room: what tests, benchmarks and the demo need and production never loads.

- :mod:`.fakeupstream`: a real aiohttp fake of Coactive with switchable faults (the demo
  runs the real daemon against it); its parts are :mod:`.fakerecords`, :mod:`.fakelogin`,
  :mod:`.fakefaults` and :mod:`.fakeapi`.
- :mod:`.hooks` and :mod:`.serve`: the test-only start-up switches
  (``COACTIVE_CREDD_TEST_*``), read only by ``python3 -m coactive_credd.testing.serve``.

Nothing outside this room imports it, except ``coactive-credd demo`` (inside the command).
"""
