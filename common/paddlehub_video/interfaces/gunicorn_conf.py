"""gunicorn settings for this package's modules, for operators' own gunicorn (see gunicorn_app.py):

    PADDLEHUB_VIDEO_MODULES=videotag_tsn_lstm gunicorn -b 127.0.0.1:8866 \\
        -c python:paddlehub_video.interfaces.gunicorn_conf 'paddlehub_video.interfaces.wsgi:create_app()'

Workers, timeouts, the worker class and preloading as `hub serving start --use_multiprocess` gets them,
for the modules of $PADDLEHUB_VIDEO_MODULES (the worker count sized for them); $WEB_CONCURRENCY asks
for a worker count (still lowered to what memory holds). Flags given on gunicorn's command line win.
"""
import os

from paddlehub_video.interfaces.gunicorn_app import settings
from paddlehub_video.interfaces.wsgi import module_names

_asked = os.environ.get("WEB_CONCURRENCY", "").strip()
globals().update(settings(len(module_names(None)), int(_asked) if _asked else None))
