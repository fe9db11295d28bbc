"""A site of many doors: one gallery and one access log on PostgreSQL (the site server), and
doors that keep a replica of the gallery, decide from it alone and send their events up.

``doors``: the doors registered with the site and their credentials. ``feed``: what the site
serves its doors (changes since a seq, full pages, the digest) and how it takes their events
in. ``api``: the sync API over HTTP. ``replica`` and ``uplink``: the door's side.
"""
