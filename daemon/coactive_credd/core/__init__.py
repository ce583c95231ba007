"""The core room: pure decisions and rules, with no network and no cryptography.

Token states and the refresh schedule (:mod:`.engine`, with the clocks passed in), what a
request means (:mod:`.request`), git's origin rule (:mod:`.gitcred`), which proxy a call takes
(:mod:`.proxy_choice`), where files live (:mod:`.paths`) and the rules they obey
(:mod:`.fsutil`, :mod:`.tokenfile`, :mod:`.pidfile`), the config file (:mod:`.config`), the
personal token's age (:mod:`.credage`), every environment variable (:mod:`.env`) and the one
exception root (:mod:`.errors`). Stdlib and platformdirs only: the fast commands load it.
"""
