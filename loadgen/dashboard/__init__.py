"""The live web dashboard of a run.

``board.Board`` is an interval sink that holds what the page shows; ``server.open_dashboard``
serves it with hypercorn, with the Stop and rate controls; ``address`` parses where it listens.
"""
