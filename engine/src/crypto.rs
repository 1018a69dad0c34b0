//! Keys and sealing: the repository's random master keys, the password-wrapped key files
//! that unlock them, and AES-256-GCM-SIV sealing of every other object with its type
//! (and, for a blob, its id) bound as associated data. See docs/FORMAT.md, "Encryption".

use aes_gcm_siv::aead::{Aead, AeadInPlace, KeyInit, Payload};
use aes_gcm_siv::{Aes256GcmSiv, Nonce};
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, Zeroizing};

use crate::error::{Error, Result};
use crate::id::{from_hex, to_hex, Id};

pub const NONCE_LEN: usize = 12;
pub const TAG_LEN: usize = 16;
/// Bytes a sealed object adds to its plaintext.
pub const SEAL_OVERHEAD: usize = NONCE_LEN + TAG_LEN;
/// OWASP 2023 for PBKDF2-HMAC-SHA256; key files with fewer rounds are refused.
pub const MIN_KDF_ROUNDS: u32 = 600_000;
/// The most PBKDF2 rounds a key file may ask for (about 2 s here, 33 times the
/// minimum): a key file is readable by anyone who can write to the storage, and one
/// claiming 4 billion rounds would make every `open` take hours.
pub const MAX_KDF_ROUNDS: u32 = 20_000_000;

pub fn fill_random(buf: &mut [u8]) {
    getrandom::getrandom(buf).expect("the operating system's random source failed");
}

/// A fresh random nonce. Drawn from a small per-thread pool filled by the operating
/// system's generator, so sealing many small blobs does not cost a system call each.
fn random_nonce() -> [u8; NONCE_LEN] {
    use std::cell::RefCell;
    const POOL: usize = NONCE_LEN * 341;
    thread_local! {
        static NONCES: RefCell<(usize, [u8; POOL])> = const { RefCell::new((POOL, [0; POOL])) };
    }
    NONCES.with(|n| {
        let (used, pool) = &mut *n.borrow_mut();
        if *used == POOL {
            fill_random(pool);
            *used = 0;
        }
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&pool[*used..*used + NONCE_LEN]);
        // Never hand out the same bytes twice.
        pool[*used..*used + NONCE_LEN].fill(0);
        *used += NONCE_LEN;
        nonce
    })
}

/// What an object is, bound into its seal so one object cannot stand in for another.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ObjectType {
    DataBlob,
    TreeBlob,
    PackHeader,
    Index,
    Snapshot,
    Lock,
}

impl ObjectType {
    fn tag(self) -> &'static [u8] {
        match self {
            ObjectType::DataBlob => b"data",
            ObjectType::TreeBlob => b"tree",
            ObjectType::PackHeader => b"pack-header",
            ObjectType::Index => b"index",
            ObjectType::Snapshot => b"snapshot",
            ObjectType::Lock => b"lock",
        }
    }
}

/// What an object is, bound to its ciphertext: `backazon/1/<type>[/<id>]`. Built on
/// the stack (at most 55 bytes): it is made for every blob read or written.
fn associated_data(ty: ObjectType, id: Option<&Id>) -> Aad {
    let mut aad = Aad {
        bytes: [0; 64],
        len: 0,
    };
    aad.push(b"backazon/1/");
    aad.push(ty.tag());
    if let Some(id) = id {
        aad.push(b"/");
        aad.push(&id.0);
    }
    aad
}

struct Aad {
    bytes: [u8; 64],
    len: usize,
}

impl Aad {
    fn push(&mut self, b: &[u8]) {
        self.bytes[self.len..self.len + b.len()].copy_from_slice(b);
        self.len += b.len();
    }
}

impl std::ops::Deref for Aad {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

/// The repository's secrets, created once at `init` and wrapped by every key file. No
/// `Debug`: they cannot end up in a message or a panic. Wiped when dropped.
#[derive(Clone)]
pub struct MasterKeys {
    cipher: Aes256GcmSiv,
    data_key: [u8; 32],
    id_key: [u8; 32],
    pub chunker_seed: u64,
}

impl Drop for MasterKeys {
    fn drop(&mut self) {
        self.data_key.zeroize();
        self.id_key.zeroize();
        self.chunker_seed.zeroize();
    }
}

#[derive(Serialize, Deserialize)]
struct MasterKeysJson {
    data_key: String,
    id_key: String,
    chunker_seed: u64,
}

impl Drop for MasterKeysJson {
    fn drop(&mut self) {
        self.data_key.zeroize();
        self.id_key.zeroize();
    }
}

impl MasterKeys {
    pub fn generate() -> MasterKeys {
        let mut data_key = [0u8; 32];
        let mut id_key = [0u8; 32];
        let mut seed = [0u8; 8];
        fill_random(&mut data_key);
        fill_random(&mut id_key);
        fill_random(&mut seed);
        MasterKeys::from_parts(data_key, id_key, u64::from_le_bytes(seed))
    }

    fn from_parts(data_key: [u8; 32], id_key: [u8; 32], chunker_seed: u64) -> MasterKeys {
        MasterKeys {
            cipher: Aes256GcmSiv::new(&data_key.into()),
            data_key,
            id_key,
            chunker_seed,
        }
    }

    /// A chunk's or tree's id: BLAKE3 keyed with the id key, so ids reveal nothing of contents.
    pub fn blob_id(&self, plaintext: &[u8]) -> Id {
        Id(*blake3::keyed_hash(&self.id_key, plaintext).as_bytes())
    }

    /// [`MasterKeys::blob_id`] over bytes that arrive in pieces.
    pub fn blob_hasher(&self) -> blake3::Hasher {
        blake3::Hasher::new_keyed(&self.id_key)
    }

    pub fn seal(&self, ty: ObjectType, id: Option<&Id>, plaintext: &[u8]) -> Vec<u8> {
        let nonce = random_nonce();
        let aad = associated_data(ty, id);
        let ct = self
            .cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad: &aad,
                },
            )
            .expect("AES-GCM-SIV encryption cannot fail for in-memory buffers");
        let mut out = Vec::with_capacity(NONCE_LEN + ct.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        out
    }

    /// Seals in place: `buf` holds NONCE_LEN bytes of room, then the plaintext. On return
    /// it holds nonce ‖ ciphertext ‖ tag, the same layout as [`MasterKeys::seal`].
    pub fn seal_in_place(&self, ty: ObjectType, id: Option<&Id>, buf: &mut Vec<u8>) {
        let nonce = random_nonce();
        buf[..NONCE_LEN].copy_from_slice(&nonce);
        let aad = associated_data(ty, id);
        let tag = self
            .cipher
            .encrypt_in_place_detached(Nonce::from_slice(&nonce), &aad, &mut buf[NONCE_LEN..])
            .expect("AES-GCM-SIV encryption cannot fail for in-memory buffers");
        buf.extend_from_slice(&tag);
    }

    /// Opens in place; returns the range of `sealed` that now holds the plaintext.
    pub fn open_in_place(
        &self,
        ty: ObjectType,
        id: Option<&Id>,
        sealed: &mut [u8],
        what: &dyn Fn() -> String,
    ) -> Result<std::ops::Range<usize>> {
        if sealed.len() < SEAL_OVERHEAD {
            return Err(Error::corrupt(what(), "object is truncated"));
        }
        let end = sealed.len() - TAG_LEN;
        let (head, tag) = sealed.split_at_mut(end);
        let (nonce, msg) = head.split_at_mut(NONCE_LEN);
        let aad = associated_data(ty, id);
        self.cipher
            .decrypt_in_place_detached(Nonce::from_slice(nonce), &aad, msg, (&*tag).into())
            .map_err(|_| {
                Error::corrupt(
                    what(),
                    "authentication failed (the object was altered, truncated or is not what its name says)",
                )
            })?;
        Ok(NONCE_LEN..end)
    }

    /// Opens a sealed object; `what` names it in the error ("pack 3fa2…", "index/…").
    pub fn open(
        &self,
        ty: ObjectType,
        id: Option<&Id>,
        sealed: &[u8],
        what: &dyn Fn() -> String,
    ) -> Result<Vec<u8>> {
        if sealed.len() < SEAL_OVERHEAD {
            return Err(Error::corrupt(what(), "object is truncated"));
        }
        let (nonce, ct) = sealed.split_at(NONCE_LEN);
        let aad = associated_data(ty, id);
        self.cipher
            .decrypt(Nonce::from_slice(nonce), Payload { msg: ct, aad: &aad })
            .map_err(|_| {
                Error::corrupt(
                    what(),
                    "authentication failed (the object was altered, truncated or is not what its name says)",
                )
            })
    }

    fn to_json(&self) -> Zeroizing<Vec<u8>> {
        Zeroizing::new(
            serde_json::to_vec(&MasterKeysJson {
                data_key: to_hex(&self.data_key),
                id_key: to_hex(&self.id_key),
                chunker_seed: self.chunker_seed,
            })
            .expect("serialising keys"),
        )
    }

    fn from_json(bytes: &[u8]) -> Option<MasterKeys> {
        let j: MasterKeysJson = serde_json::from_slice(bytes).ok()?;
        let key = |hex: &str| -> Option<[u8; 32]> {
            let v = Zeroizing::new(from_hex(hex)?);
            v.as_slice().try_into().ok()
        };
        let (mut data_key, mut id_key) = (key(&j.data_key)?, key(&j.id_key)?);
        let keys = MasterKeys::from_parts(data_key, id_key, j.chunker_seed);
        data_key.zeroize();
        id_key.zeroize();
        Some(keys)
    }
}

/// `keys/<id>`: the master keys wrapped by one password. Plaintext JSON apart from `sealed`.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct KeyFile {
    pub version: u32,
    pub created: String,
    pub hostname: String,
    pub username: String,
    pub kdf: String,
    pub rounds: u32,
    pub salt: String,
    pub sealed: String,
}

const KEY_AAD: &[u8] = b"backazon/1/key";
const KDF_NAME: &str = "pbkdf2-hmac-sha256";

fn derive(password: &[u8], salt: &[u8], rounds: u32) -> Aes256GcmSiv {
    let mut key = Zeroizing::new([0u8; 32]);
    pbkdf2::pbkdf2_hmac::<sha2::Sha256>(password, salt, rounds, key.as_mut());
    Aes256GcmSiv::new(key.as_ref().into())
}

impl KeyFile {
    pub fn create(password: &[u8], keys: &MasterKeys, rounds: u32) -> KeyFile {
        let rounds = rounds.clamp(MIN_KDF_ROUNDS, MAX_KDF_ROUNDS);
        let mut salt = [0u8; 32];
        fill_random(&mut salt);
        let mut nonce = [0u8; NONCE_LEN];
        fill_random(&mut nonce);
        let ct = derive(password, &salt, rounds)
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: &keys.to_json(),
                    aad: KEY_AAD,
                },
            )
            .expect("encrypting key file");
        let mut sealed = nonce.to_vec();
        sealed.extend_from_slice(&ct);
        KeyFile {
            version: 1,
            created: jiff::Timestamp::now().to_string(),
            hostname: crate::sys::hostname(),
            username: crate::sys::username(),
            kdf: KDF_NAME.into(),
            rounds,
            salt: to_hex(&salt),
            sealed: to_hex(&sealed),
        }
    }

    /// Reads a key file, refusing one whose derivation this version does not use or
    /// whose rounds are outside [`MIN_KDF_ROUNDS`]..=[`MAX_KDF_ROUNDS`].
    pub fn decode(bytes: &[u8]) -> std::result::Result<KeyFile, String> {
        let kf: KeyFile = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        if kf.kdf != KDF_NAME {
            return Err(format!("unknown key derivation {:?}", kf.kdf));
        }
        if !(MIN_KDF_ROUNDS..=MAX_KDF_ROUNDS).contains(&kf.rounds) {
            return Err(format!(
                "{} key derivation rounds, outside {MIN_KDF_ROUNDS}..={MAX_KDF_ROUNDS}",
                kf.rounds
            ));
        }
        Ok(kf)
    }

    /// `None` when the password does not open this key file (or the file is malformed).
    pub fn unlock(&self, password: &[u8]) -> Option<MasterKeys> {
        if self.kdf != KDF_NAME || !(MIN_KDF_ROUNDS..=MAX_KDF_ROUNDS).contains(&self.rounds) {
            return None;
        }
        let salt = from_hex(&self.salt)?;
        let sealed = from_hex(&self.sealed)?;
        if sealed.len() < SEAL_OVERHEAD {
            return None;
        }
        let (nonce, ct) = sealed.split_at(NONCE_LEN);
        let plain = Zeroizing::new(
            derive(password, &salt, self.rounds)
                .decrypt(
                    Nonce::from_slice(nonce),
                    Payload {
                        msg: ct,
                        aad: KEY_AAD,
                    },
                )
                .ok()?,
        );
        MasterKeys::from_json(&plain)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_binds_type_and_id() {
        let k = MasterKeys::generate();
        let id = k.blob_id(b"x");
        let sealed = k.seal(ObjectType::DataBlob, Some(&id), b"secret");
        let what = || "t".to_string();
        assert_eq!(
            k.open(ObjectType::DataBlob, Some(&id), &sealed, &what)
                .unwrap(),
            b"secret"
        );
        assert!(k
            .open(ObjectType::TreeBlob, Some(&id), &sealed, &what)
            .is_err());
        let other = k.blob_id(b"y");
        assert!(k
            .open(ObjectType::DataBlob, Some(&other), &sealed, &what)
            .is_err());
        let mut bad = sealed.clone();
        bad[20] ^= 1;
        assert!(k
            .open(ObjectType::DataBlob, Some(&id), &bad, &what)
            .is_err());
        assert!(k
            .open(ObjectType::DataBlob, Some(&id), &sealed[..10], &what)
            .is_err());
    }

    #[test]
    fn nonces_do_not_repeat() {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..5000 {
            assert!(seen.insert(random_nonce()));
        }
    }

    #[test]
    fn key_file_round_trip() {
        let k = MasterKeys::generate();
        let kf = KeyFile::create(b"pw", &k, MIN_KDF_ROUNDS);
        let back = kf.unlock(b"pw").unwrap();
        assert_eq!(back.blob_id(b"a"), k.blob_id(b"a"));
        assert_eq!(back.chunker_seed, k.chunker_seed);
        assert!(kf.unlock(b"wrong").is_none());
    }

    #[test]
    fn key_files_claiming_absurd_derivations_are_refused_at_once() {
        let k = MasterKeys::generate();
        let kf = KeyFile::create(b"pw", &k, MIN_KDF_ROUNDS);
        let json = serde_json::to_value(&kf).unwrap();
        let with = |key: &str, v: serde_json::Value| {
            let mut j = json.clone();
            j[key] = v;
            serde_json::to_vec(&j).unwrap()
        };
        let t = std::time::Instant::now();
        let e = KeyFile::decode(&with("rounds", u32::MAX.into())).unwrap_err();
        assert!(e.contains("4294967295 key derivation rounds"), "{e}");
        let e = KeyFile::decode(&with("rounds", 1.into())).unwrap_err();
        assert!(e.contains("outside"), "{e}");
        let e = KeyFile::decode(&with("kdf", "argon9".into())).unwrap_err();
        assert!(e.contains("argon9"), "{e}");
        let mut odd = kf.clone();
        odd.rounds = u32::MAX;
        assert!(odd.unlock(b"pw").is_none());
        assert!(t.elapsed() < std::time::Duration::from_secs(1));
        assert!(KeyFile::decode(&serde_json::to_vec(&kf).unwrap()).is_ok());
    }
}
