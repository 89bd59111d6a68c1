"""Database-side collectors: one module per sampler, this registry, and a runner
(`exporter.collectors.runner`) that schedules them.

Each collector's defaults (enabled, interval, timeouts, options) are its settings model's
defaults in `exporter.settings.CollectorsSettings`; a name unknown there fails at start-up.
"""

from __future__ import annotations

from typing import Any

from exporter.collectors.activity import ActivityCollector
from exporter.collectors.archiver import ArchiverCollector
from exporter.collectors.backups import BackupsCollector
from exporter.collectors.base import Collector
from exporter.collectors.database import DatabaseCollector
from exporter.collectors.database_wraparound import DatabaseWraparoundCollector
from exporter.collectors.indexes import IndexesCollector
from exporter.collectors.locks import LocksCollector
from exporter.collectors.long_running_transactions import LongRunningTransactionsCollector
from exporter.collectors.migrations import MigrationsCollector
from exporter.collectors.postmaster import PostmasterCollector
from exporter.collectors.replication import ReplicationCollector
from exporter.collectors.replication_slot import ReplicationSlotCollector
from exporter.collectors.roles import RolesCollector
from exporter.collectors.server_activity import ServerActivityCollector
from exporter.collectors.settings import SettingsCollector
from exporter.collectors.stat_activity_autovacuum import StatActivityAutovacuumCollector
from exporter.collectors.stat_bgwriter import StatBgwriterCollector
from exporter.collectors.stat_checkpointer import StatCheckpointerCollector
from exporter.collectors.stat_database_conflicts import StatDatabaseConflictsCollector
from exporter.collectors.stat_wal_receiver import StatWalReceiverCollector
from exporter.collectors.statements import StatementsCollector
from exporter.collectors.statio_user_tables import StatioUserTablesCollector
from exporter.collectors.tables import TablesCollector
from exporter.collectors.wal import WalCollector
from exporter.settings import CollectorsSettings

COLLECTORS: dict[str, type[Collector[Any]]] = {
    cls.name: cls
    for cls in (
        IndexesCollector,
        TablesCollector,
        StatioUserTablesCollector,
        DatabaseCollector,
        ActivityCollector,
        StatementsCollector,
        MigrationsCollector,
        SettingsCollector,
        PostmasterCollector,
        DatabaseWraparoundCollector,
        LocksCollector,
        LongRunningTransactionsCollector,
        StatActivityAutovacuumCollector,
        RolesCollector,
        ReplicationCollector,
        ReplicationSlotCollector,
        StatWalReceiverCollector,
        StatBgwriterCollector,
        StatCheckpointerCollector,
        WalCollector,
        ArchiverCollector,
        BackupsCollector,
        ServerActivityCollector,
        StatDatabaseConflictsCollector,
    )
}

# Collector name -> whether it runs when the config does not say.
DEFAULT_ENABLED: dict[str, bool] = {
    name: bool(getattr(CollectorsSettings(), name).enabled) for name in COLLECTORS
}

__all__ = ["COLLECTORS", "DEFAULT_ENABLED", "Collector"]
