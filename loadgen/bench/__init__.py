"""Self-benchmark of the tool on the machine it runs on (``make bench``).

Every figure is printed next to a reference path measured in the same run, so the ratios hold on
whatever machine runs them even when the absolute numbers do not.
"""
