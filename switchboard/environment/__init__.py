"""Reading ``Settings`` from the environment, one group of settings per module.

``parse`` holds the typed readers of single variables (and ``SettingsError``);
``bus``, ``gateway``, ``llm``, ``conversation``, ``relay`` and ``operations``
each read one group into the ``Settings`` fields it owns; ``profile`` lays an
agent profile under the environment. ``switchboard.settings.Settings.from_env``
composes them.
"""
