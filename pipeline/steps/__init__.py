"""One library function per DVC stage: ``run_<stage>(params, workspace)``.

``stages/<stage>.py`` is only the command line around it (pipeline.cli); tests call these
functions on a temporary :class:`pipeline.workspace.Workspace`. Each module imports only what its
stage needs, so the stage's DVC dependencies (derived from the imports, checked by
tests/test_stage_deps.py) stay narrow.
"""
