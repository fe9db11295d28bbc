"""Backup and restore, below both fronts: the page's download (``GET /api/backup``) and
``facegate backup --to DIR`` write the same file, and every restore goes through
:func:`restore_database`, whichever front it came from.

- :mod:`device.backup.database`: the consistent copy and the checked swap.
- :mod:`device.backup.rows`: what a restore accepts, row by row.
- :mod:`device.backup.folder`: dated backups in a folder, the oldest pruned (the timer's).
"""

from device.backup.database import (
    ACCOUNT_TABLES,
    backup_database,
    refuse_site_store,
    restore_database,
)
from device.backup.folder import backup_file_name, backup_to_folder, backups_in

__all__ = [
    "ACCOUNT_TABLES",
    "backup_database",
    "backup_file_name",
    "backup_to_folder",
    "backups_in",
    "refuse_site_store",
    "restore_database",
]
