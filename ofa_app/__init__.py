"""The app above the libraries: the ``ofa`` CLI, its subcommands, the quickstart and the pipeline.

It may import ``ofa``, ``search`` and ``export``; none of them imports it (``lint-imports``).
"""
