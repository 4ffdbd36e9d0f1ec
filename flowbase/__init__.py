"""The bottom layer: what every other layer shares and nothing else. ``errors`` (the ``UserError`` family: bad
input, bad config, missing weights or files, printed as one line) and ``code`` (which code ran: the project's git
commit, recorded identically by evaluations and training runs)."""
