//! OAuth nonces of drop-in clients, seen by any replica: a request replayed at another
//! replica is refused as it is at the one that saw it first.

use std::time::Duration;

use crate::{Redis, Unreachable};

impl Redis {
    /// Records `nonce` (already qualified by its token) for `keep`; whether this was its
    /// first use anywhere.
    pub async fn first_use_of_nonce(&self, nonce: &str, keep: Duration) -> Result<bool, Unreachable> {
        let mut cmd = redis::cmd("SET");
        cmd.arg(self.key(&format!("nonce:{nonce}"))).arg(1).arg("NX").arg("EX").arg(keep.as_secs().max(1));
        let set: Option<String> = self.run(&cmd).await?;
        Ok(set.is_some())
    }
}
