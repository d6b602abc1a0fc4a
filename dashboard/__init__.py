"""Seesaw's dashboard building blocks.

- `dashboard.figures`: pure plotly figure builders (data -> small info structure -> Figure),
  testable without a browser.
- `dashboard.queries`: the only module that reads the run lake for the pages.
- `dashboard.state`: view state mirrored in the URL query parameters.
- `dashboard.widgets`, `dashboard.params_form`: reusable Streamlit widgets.
"""
