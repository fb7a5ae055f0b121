"""The composition root: settings, logging, the CLI, the process runner and the
Twilio-side simulator. It wires ``gateway`` and ``actors`` to a ``bus``; those
packages never import this one."""
