"""Taking backups: the recorded job, logical and physical backups, finding them again."""
