"""Seesaw's engine: datasets, models, balancers, training, the run lake and the worker.

Never imports streamlit; the dashboard and the CLI read everything through `engine.store`.
"""
