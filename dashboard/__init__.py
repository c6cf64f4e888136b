"""The Streamlit dashboard over Pinot: a consumer view scoped by a signed portal token, and the
operator's ops and product views.

``queries`` (SQL + parameters) and ``tokens`` (portal tokens) are pure and unit-tested; ``data``
talks to the Pinot broker; ``app`` is the Streamlit script; ``python -m dashboard`` is the CLI.
"""
