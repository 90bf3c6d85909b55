"""State shared between the processes of one deployment: Redis keys and clients, the pending-path
hash, host and cluster locks, scheduled-run ticks, queue names, and the status records that
``synchro-sync status`` reads.  Everything here depends on the configuration only."""
