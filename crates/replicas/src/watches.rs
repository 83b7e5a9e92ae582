//! Watches in Redis: one hash of every watch's record by ID, so every replica sees the
//! watches any of them made. A record is updated only while it is there (one script), so a
//! refresh that ends after a `DELETE` at another replica does not bring the watch back.

use crate::{Redis, Unreachable};

/// Writes ARGV[2] under ARGV[1] in the hash KEYS[1] if ARGV[1] is there; 1 if written.
const UPDATE: &str = r"
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1
";

impl Redis {
    /// Every watch's record, by ID.
    pub async fn watches(&self) -> Result<Vec<(String, Vec<u8>)>, Unreachable> {
        let mut cmd = redis::cmd("HGETALL");
        cmd.arg(self.watches_key());
        self.run(&cmd).await
    }

    /// The record of watch `id`, if there is one.
    pub async fn watch(&self, id: &str) -> Result<Option<Vec<u8>>, Unreachable> {
        let mut cmd = redis::cmd("HGET");
        cmd.arg(self.watches_key()).arg(id);
        self.run(&cmd).await
    }

    /// Writes the record of watch `id`: added when `add`, else only if it is still there.
    /// Whether it was written.
    pub async fn put_watch(&self, id: &str, record: &[u8], add: bool) -> Result<bool, Unreachable> {
        if add {
            let mut cmd = redis::cmd("HSET");
            cmd.arg(self.watches_key()).arg(id).arg(record);
            let _: u64 = self.run(&cmd).await?;
            return Ok(true);
        }
        static SCRIPT: std::sync::LazyLock<redis::Script> =
            std::sync::LazyLock::new(|| redis::Script::new(UPDATE));
        let mut call = SCRIPT.key(self.watches_key());
        call.arg(id).arg(record);
        let written: u8 = self.invoke(&call).await?;
        Ok(written == 1)
    }

    /// Forgets watch `id`; whether it was there.
    pub async fn remove_watch(&self, id: &str) -> Result<bool, Unreachable> {
        let mut cmd = redis::cmd("HDEL");
        cmd.arg(self.watches_key()).arg(id);
        let removed: u64 = self.run(&cmd).await?;
        Ok(removed == 1)
    }

    fn watches_key(&self) -> String {
        self.key("watches")
    }
}
