"""Stream processors (faust): run state, metric summaries and alerts.

Needs the ``processors`` extra: ``pip install 'runstream[processors]'``.
"""
