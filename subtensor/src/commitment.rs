//! templar's bucket commitment on subtensor: one `Raw128` field holding the Cloudflare R2
//! account id (32 characters), the read access key id (32) and the read secret (64). The
//! bucket is named after the account and served at `https://{account}.r2.cloudflarestorage.com`.

use templar_protocol::chain::Commitment;

pub const RAW_LEN: usize = 128;

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum CommitmentFormatError {
    #[error(
        "a subtensor commitment names an R2 bucket: endpoint https://ACCOUNT.r2.cloudflarestorage.com and bucket ACCOUNT (32 characters), key id 32 and secret 64 characters; got {0}"
    )]
    NotR2(String),
    #[error("the commitment is {0} bytes, not the 128 of templar's format")]
    Length(usize),
    #[error("the commitment is not ASCII text")]
    NotText,
}

fn r2_endpoint(account: &str) -> String {
    format!("https://{account}.r2.cloudflarestorage.com")
}

/// The 128 bytes committed for `commitment` (which must be an R2 bucket in templar's layout).
pub fn to_raw(commitment: &Commitment) -> Result<Vec<u8>, CommitmentFormatError> {
    let account = &commitment.bucket;
    let why = if account.len() != 32 || !account.bytes().all(|b| b.is_ascii_alphanumeric()) {
        Some(format!("bucket of {} characters", account.len()))
    } else if commitment.endpoint.trim_end_matches('/') != r2_endpoint(account) {
        Some(format!("endpoint {}", commitment.endpoint))
    } else if commitment.access_key_id.len() != 32 || !commitment.access_key_id.is_ascii() {
        Some(format!(
            "key id of {} characters",
            commitment.access_key_id.len()
        ))
    } else if commitment.secret_access_key.len() != 64 || !commitment.secret_access_key.is_ascii() {
        Some(format!(
            "secret of {} characters",
            commitment.secret_access_key.len()
        ))
    } else {
        None
    };
    if let Some(why) = why {
        return Err(CommitmentFormatError::NotR2(why));
    }
    Ok(format!(
        "{account}{}{}",
        commitment.access_key_id, commitment.secret_access_key
    )
    .into_bytes())
}

/// The bucket a node committed, read back from its `Raw128` field.
pub fn from_raw(raw: &[u8]) -> Result<Commitment, CommitmentFormatError> {
    if raw.len() != RAW_LEN {
        return Err(CommitmentFormatError::Length(raw.len()));
    }
    let text = std::str::from_utf8(raw).map_err(|_| CommitmentFormatError::NotText)?;
    if !text.is_ascii() {
        return Err(CommitmentFormatError::NotText);
    }
    let (account, rest) = text.split_at(32);
    let (key_id, secret) = rest.split_at(32);
    Ok(Commitment {
        endpoint: r2_endpoint(account),
        region: "auto".into(),
        bucket: account.into(),
        access_key_id: key_id.into(),
        secret_access_key: secret.into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r2() -> Commitment {
        let account = "0123456789abcdef0123456789abcdef";
        Commitment {
            endpoint: r2_endpoint(account),
            region: "auto".into(),
            bucket: account.into(),
            access_key_id: "k".repeat(32),
            secret_access_key: "s".repeat(64),
        }
    }

    #[test]
    fn an_r2_bucket_round_trips_through_128_bytes() {
        let raw = to_raw(&r2()).unwrap();
        assert_eq!(raw.len(), RAW_LEN);
        assert_eq!(from_raw(&raw).unwrap(), r2());
    }

    #[test]
    fn other_buckets_and_bytes_are_refused_with_the_reason() {
        let mut local = r2();
        local.endpoint = "http://127.0.0.1:3900".into();
        assert!(
            matches!(to_raw(&local), Err(CommitmentFormatError::NotR2(why)) if why.contains("endpoint"))
        );
        let mut short = r2();
        short.secret_access_key = "s".into();
        assert!(
            matches!(to_raw(&short), Err(CommitmentFormatError::NotR2(why)) if why.contains("secret"))
        );
        assert_eq!(
            from_raw(&[b'a'; 64]),
            Err(CommitmentFormatError::Length(64))
        );
        assert_eq!(from_raw(&[0xff; 128]), Err(CommitmentFormatError::NotText));
    }
}
