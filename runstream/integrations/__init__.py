"""Integrations with the libraries that run training loops.

One module per library, each imported only when used (the library is the user's, installed with
the matching extra, e.g. ``pip install 'runstream[transformers]'``):

- :mod:`runstream.integrations.transformers`: ``RunstreamCallback`` for the Hugging Face Trainer
- :mod:`runstream.integrations.lightning`: ``RunstreamLogger`` for Lightning's Trainer
- :mod:`runstream.integrations.keras`: ``RunstreamCallback`` for Keras 3 ``fit``
- :mod:`runstream.integrations.accelerate`: ``RunstreamTracker`` for ``Accelerator(log_with=...)``
"""
