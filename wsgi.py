"""uWSGI's entry point (see uwsgi.ini): the application, configured from the
environment. uWSGI loads it after forking (lazy-apps), so the engine's session
and threads live in the process that serves."""
import atexit
import logging

from app import create_app

logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

application = create_app()
# Finish or refuse what is in flight and stop the engine's threads on shutdown.
atexit.register(application.extensions["pokegen"].engine.close)
