"""Session backups: snapshots of the session store taken, verified, listed, pruned and restored
(:mod:`~worker.backups.snapshots`, the public face), their file format
(:mod:`~worker.backups.format`, :mod:`~worker.backups.verify`), their manifests
(:mod:`~worker.backups.manifest`), where they are kept (:mod:`~worker.backups.dest`: a folder or a
module-store container), and copying sessions between stores or files
(:mod:`~worker.backups.transfer`)."""
