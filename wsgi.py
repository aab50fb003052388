"""The WSGI entry point for gunicorn: ``gunicorn -c gunicorn.conf.py wsgi:app``.

The gevent worker monkey-patches before this module is imported, so the rest
of Sluice uses plain ``threading`` and ``queue``.
"""

from app import create_app

app = create_app()
