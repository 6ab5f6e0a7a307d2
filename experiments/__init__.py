"""Entry points: `python -m experiments.<name>`.

Importing this package changes nothing in the process: the commands that
run compiled programs apply the process-wide malloc settings
(`perceiver_jax.host_memory`) as the first line of their `main`.
"""
