//! The facility's Ed25519 key pair, made on first start in the state
//! directory. The private key stays there (mode 0600); components get only
//! the public key.

use anyhow::Context;
use jwt_simple::prelude::*;
use std::path::Path;

const PRIVATE: &str = "facility-key.pem";
const PUBLIC: &str = "facility-key.pub.pem";

/// Loads the key pair, making it first if the state directory has none.
pub fn load_or_create(state_dir: &Path) -> anyhow::Result<Ed25519KeyPair> {
    std::fs::create_dir_all(state_dir)
        .with_context(|| format!("cannot create state directory {}", state_dir.display()))?;
    // Nobody else lists it; broker users (rabbitmq) and the job sandbox
    // still pass through to the directories made for them.
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(state_dir, std::fs::Permissions::from_mode(0o711))
            .with_context(|| format!("cannot set the mode of {}", state_dir.display()))?;
    }
    let private = state_dir.join(PRIVATE);
    if private.exists() {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o600))?;
    }
    if private.exists() {
        let pem = std::fs::read_to_string(&private)
            .with_context(|| format!("cannot read {}", private.display()))?;
        return Ed25519KeyPair::from_pem(&pem).map_err(|e| {
            anyhow::anyhow!("{} is not an Ed25519 private key: {e}", private.display())
        });
    }
    let pair = Ed25519KeyPair::generate();
    write_private(&private, &pair.to_pem())?;
    std::fs::write(state_dir.join(PUBLIC), pair.public_key().to_pem())?;
    tracing::info!(path = %private.display(), "made the facility key pair");
    Ok(pair)
}

fn write_private(path: &Path, pem: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("pem.tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    f.write_all(pem.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn made_once_private_key_0600() {
        let dir = std::env::temp_dir().join(format!("s3m-keys-{}", uuid::Uuid::new_v4()));
        let a = load_or_create(&dir).unwrap();
        let b = load_or_create(&dir).unwrap();
        assert_eq!(a.public_key().to_bytes(), b.public_key().to_bytes());
        let mode = std::fs::metadata(dir.join(PRIVATE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
