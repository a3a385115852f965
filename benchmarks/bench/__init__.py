"""The securechat server benchmarks; ``benchmarks/run.py`` is the command line.

See run.py's docstring for the strategy and the module layout, and
benchmarks/README.md for every figure and target.
"""
