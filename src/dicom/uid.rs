//! Making and checking UIDs.

/// A new UID under the UUID-derived root 2.25 (PS3.5 B.2): 128 random bits as a decimal integer.
pub fn new_uid() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut bits = 0u128;
    for _ in 0..2 {
        // RandomState is seeded from the operating system's randomness once per thread and
        // advanced for every instance, so successive values differ.
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or_default(),
        );
        h.write_u32(std::process::id());
        bits = (bits << 64) | u128::from(h.finish());
    }
    format!("2.25.{bits}")
}

/// A UID as PS3.5 9.1 shapes it: at most 64 characters, components of digits joined by dots.
/// (Leading zeros inside a component are tolerated: senders write them.) Such a UID is also safe
/// as a path component: never empty, `..` or a slash.
pub fn is_valid(uid: &str) -> bool {
    uid.len() <= 64
        && uid
            .split('.')
            .all(|component| !component.is_empty() && component.bytes().all(|b| b.is_ascii_digit()))
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} {uid:?} is not a valid UID (digits and dots, at most 64 characters)")]
pub struct InvalidUid {
    pub what: &'static str,
    pub uid: String,
}

/// [`is_valid`], as an error that names the attribute.
pub fn check(what: &'static str, uid: &str) -> Result<(), InvalidUid> {
    if is_valid(uid) {
        Ok(())
    } else {
        Err(InvalidUid {
            what,
            uid: uid.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_digits_and_single_dots_up_to_64_characters() {
        for bad in [
            "",
            ".",
            "..",
            "1..2",
            ".1",
            "1.",
            "1/2",
            "../1",
            "1.a",
            &"1".repeat(65),
        ] {
            assert!(check("UID", bad).is_err(), "{bad:?} accepted");
        }
        assert!(check("UID", "1.2.840.10008.5.1.4.1.1.4").is_ok());
        assert!(is_valid(&new_uid()));
        assert_ne!(new_uid(), new_uid());
        assert!(new_uid().len() <= 64);
    }
}

/// Where the UIDs of new objects come from: fresh random ones, or a sequence derived from a seed
/// (a job's identity), so that a job run again writes the same UIDs and a re-send replaces what
/// PACS holds instead of adding a second copy.
#[derive(Debug, Clone)]
pub enum Uids {
    Random,
    Derived { seed: String, issued: u64 },
}

impl Uids {
    pub fn derived(seed: impl Into<String>) -> Uids {
        Uids::Derived {
            seed: seed.into(),
            issued: 0,
        }
    }

    /// The next UID: under 2.25, 128 bits as a decimal integer (random, or the first 128 bits of
    /// the SHA-256 of the seed and the count issued so far).
    pub fn issue(&mut self) -> String {
        match self {
            Uids::Random => new_uid(),
            Uids::Derived { seed, issued } => {
                use sha2::{Digest, Sha256};
                let digest = Sha256::new()
                    .chain_update(seed.as_bytes())
                    .chain_update(issued.to_be_bytes())
                    .finalize();
                *issued += 1;
                let mut bits = [0u8; 16];
                bits.copy_from_slice(&digest[..16]);
                format!("2.25.{}", u128::from_be_bytes(bits))
            }
        }
    }
}

#[cfg(test)]
mod derived_tests {
    use super::*;

    #[test]
    fn derived_uids_repeat_for_the_same_seed_and_differ_between_seeds() {
        let take = |mut uids: Uids| (0..3).map(|_| uids.issue()).collect::<Vec<_>>();
        let a = take(Uids::derived("job 1"));
        assert_eq!(a, take(Uids::derived("job 1")));
        assert_ne!(a, take(Uids::derived("job 2")));
        assert!(a[0] != a[1] && a[1] != a[2]);
        assert!(a.iter().all(|u| is_valid(u) && u.starts_with("2.25.")));
        assert_ne!(take(Uids::Random), take(Uids::Random));
    }
}
