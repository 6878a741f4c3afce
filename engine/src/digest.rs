//! Typed digests. A file's content hash, a stage instance's cache key and a stage output's
//! hash are all blake3 hashes, and mixing them up is a silent caching bug; each is its own
//! type, so the compiler refuses `store.entry(file_digest)`.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

macro_rules! digest {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub [u8; 32]);

        impl $name {
            pub fn from_hash(h: blake3::Hash) -> Self {
                $name(*h.as_bytes())
            }

            /// Lower-case hex, as stored in file names and records.
            pub fn hex(&self) -> String {
                blake3::Hash::from_bytes(self.0).to_hex().to_string()
            }

            /// The first 12 hex digits, for messages.
            pub fn short(&self) -> String {
                self.hex()[..12].to_string()
            }

            pub fn parse(hex: &str) -> Option<Self> {
                blake3::Hash::from_hex(hex).ok().map(Self::from_hash)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.short())
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.hex())
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.hex())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                $name::parse(&s).ok_or_else(|| serde::de::Error::custom(format!("not a blake3 hex digest: {s}")))
            }
        }
    };
}

digest! {
    /// The content of one input file (or of a directory: its files' names and contents).
    FileDigest
}

digest! {
    /// A stage instance's cache key: the hash of everything that determines its output.
    StageKey
}

digest! {
    /// A stage instance's output: the hash of its manifest (every output file's name and
    /// content). Downstream keys use this, not the upstream key, so identical output stops
    /// invalidation (early cut-off).
    OutputDigest
}
