"""The north side: the application that creates operation jobs on OpenGate's north API (issue 10).

Layout, one concept per module:

- ``config``: what to run (the north API, arrival stages, mix, operation parameters, how the
  close is learned), validated;
- ``jobs``: correlation and the phases of each job (pure; a transition table);
- ``runner``: ``run_north``, the trio shell: the N1 workers, the callback receiver, the poller,
  the deadline timer, the drain.

The package sits one layer above ``device``/``platform``: it reuses the platform's pure pacing
(``schedule``), its mix and its configuration records, and never imports the device side (the
fleet calls the tracker through the engine's observer protocol).
"""
