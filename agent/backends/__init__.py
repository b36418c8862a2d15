"""Backend registry: a backend name -> its class, imported only when a case asks for it.

Lazy by module path so `probe` and the synthetic backend never pay for importing a framework,
and a framework missing on a device fails only the cases that need it (as SKIPPED). What each
backend is lives in catalog.py; a user's own backend comes from the file its job names.
"""

import importlib

from agent.backends import catalog


def get_backend_class(name, user_files=None):
    """The Backend subclass for `name` (a user backend's class carries its entry as `cls.spec`).

    user_files: {name: path of a user backend file on this device} from the job.
    Raises:
      ValueError: an unknown name (the message lists the known ones).
      userfile.BadBackendFile: a user backend file that cannot be loaded.
    """
    if name in catalog.BY_NAME:
        spec = catalog.BY_NAME[name]
        return getattr(importlib.import_module(spec.module), spec.cls)
    if name in (user_files or {}):
        from agent.backends import userfile
        spec = userfile.read_spec(user_files[name])
        cls = userfile.load_class(spec, user_files[name])
        cls.spec = spec
        return cls
    known = catalog.names() + tuple(sorted(user_files or {}))
    raise ValueError("unknown backend %r; allowed: %s" % (name, ", ".join(known)))
