//! Watches: sets of Tweets the service keeps warm, kept here so they outlive a restart.
//! Each is an opaque record (the engine's) under its ID; a record is added once, then
//! updated only while it exists, so a refresh that ends after a `DELETE` does not bring
//! the watch back.

use redb::{ReadableDatabase, ReadableTable, TableDefinition};

use crate::{Store, StoreError};

/// Watch ID → its record.
pub(crate) const WATCHES: TableDefinition<&str, &[u8]> = TableDefinition::new("watches");

impl Store {
    /// Every watch's record, by ID.
    pub fn watches(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(WATCHES)?;
        let mut out = Vec::new();
        for entry in table.iter()? {
            let (id, record) = entry?;
            out.push((id.value().to_string(), record.value().to_vec()));
        }
        Ok(out)
    }

    /// Writes the record of watch `id`: added when `add`, else only if it is still there.
    /// Whether it was written.
    pub fn put_watch(&self, id: &str, record: &[u8], add: bool) -> Result<bool, StoreError> {
        let txn = self.db.begin_write()?;
        let written = {
            let mut table = txn.open_table(WATCHES)?;
            let there = table.get(id)?.is_some();
            if add || there {
                table.insert(id, record)?;
            }
            add || there
        };
        txn.commit()?;
        Ok(written)
    }

    /// Forgets watch `id`; whether it was there.
    pub fn remove_watch(&self, id: &str) -> Result<bool, StoreError> {
        let txn = self.db.begin_write()?;
        let removed = txn.open_table(WATCHES)?.remove(id)?.is_some();
        txn.commit()?;
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use crate::{Config, Store};

    #[test]
    fn a_watch_is_updated_only_while_it_is_there_and_outlives_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let config = Config {
            path: dir.path().to_path_buf(),
            settle_after: std::time::Duration::from_secs(72 * 3600),
            fresh_ttl: std::time::Duration::from_secs(60),
            status_ttl: std::time::Duration::from_secs(900),
            max_bytes: 1 << 30,
        };
        {
            let store = Store::open(config.clone()).unwrap();
            assert!(store.put_watch("a", b"one", true).unwrap());
            assert!(store.put_watch("a", b"two", false).unwrap(), "an update of a watch there");
            assert!(!store.put_watch("b", b"ghost", false).unwrap(), "no update brings a watch back");
            assert!(store.put_watch("c", b"three", true).unwrap());
            assert!(store.remove_watch("c").unwrap());
            assert!(!store.remove_watch("c").unwrap());
            store.sync().unwrap();
        }
        let store = Store::open(config).unwrap();
        assert_eq!(store.watches().unwrap(), vec![("a".to_string(), b"two".to_vec())]);
    }
}
