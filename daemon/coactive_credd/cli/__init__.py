"""The command line: argparse over the other rooms (``coactive-credd``'s entry point is
:func:`coactive_credd.cli.main.main`).

Each command lives in the module its name says (``login``, ``vault``, ``status``, ``doctor``,
``git``, ``execrun``, ``install``, ``demo``...); they share only :mod:`.common`. The heavy rooms
(the server, the vault, aiohttp, cryptography) are imported inside the commands that need
them, so ``token``, ``status``, ``refresh`` and ``socket-path`` start in tens of milliseconds.
"""
