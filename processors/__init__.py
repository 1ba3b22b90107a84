"""Stream processors (faust): run state, metric summaries and alerts.

Needs the ``processors`` extra: ``pip install 'runstream[processors]'``.
"""

from runstream._extras import require_installed

require_installed("faust", part="runstream.processors", extra="processors")
