"""Pure figure builders: DataFrame -> small info structure -> plotly Figure.

Nothing here imports streamlit or reads the lake; every function is unit-tested without a browser.
"""
