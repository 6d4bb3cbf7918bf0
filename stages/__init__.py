"""DVC stage entry points: `python -m stages.<name>` (run from the repository root, as DVC does).

Run as modules so that `pipeline` is imported from the checkout being run (the current directory),
not from wherever the virtualenv's editable install points: `dvc exp run --temp` and other clones
sharing one virtualenv then use their own code and write their own outputs.
"""
