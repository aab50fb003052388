"""Kept for command lines written before the move: Sluice's gunicorn settings are
``../gunicorn.conf.py``, which gunicorn reads by default from the checkout."""

import pathlib
import runpy

_ROOT_CONFIG = pathlib.Path(__file__).resolve().parent.parent / "gunicorn.conf.py"
globals().update(
    {name: value for name, value in runpy.run_path(str(_ROOT_CONFIG)).items() if not name.startswith("__")}
)
