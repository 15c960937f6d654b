"""A click option backed by a setting: its help shows the effective value and where it came from.

``--temperature`` declared with ``cls=SettingOption, setting="temperature"`` reads, in
``charlite chat --help``: ``Sampling temperature. [now: 0.7 (config file)]``. The value itself
is resolved by the command with :func:`charlite.settings.resolve` (flag > env > config > default).
"""

from __future__ import annotations

import click

from charlite import settings
from charlite.errors import CharliteError


class SettingOption(click.Option):
    def __init__(self, *args, setting: str, **kwargs):
        self.setting = setting
        super().__init__(*args, **kwargs)

    def get_help_record(self, ctx: click.Context):
        record = super().get_help_record(ctx)
        if record is None:
            return None
        try:
            now = settings.describe(settings.resolve(self.setting), self.setting)
        except CharliteError as exc:
            now = f"invalid: {exc}"
        return record[0], f"{record[1]}  [now: {now}]"
