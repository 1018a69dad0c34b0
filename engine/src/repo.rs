//! An opened repository: its config, its unlocked master keys, its backend and cache, and
//! the reads and writes every command shares (objects, blobs, trees, snapshots, index, keys).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::backend::{Backend, Kind};
use crate::blob::{self, Compression};
use crate::cache::Cache;
use crate::chunker::ChunkerParams;
use crate::crypto::{KeyFile, MasterKeys, ObjectType, MIN_KDF_ROUNDS};
use crate::datacache::DataCache;
use crate::error::{Error, Result};
use crate::fetch::PackReader;
use crate::id::Id;
use crate::index::{self, BlobLocation, Index};
use crate::pack::{self, BlobKind, PackBlob, TRAILER_LEN};
use crate::snapshot::{Snapshot, SnapshotEntry};
use crate::tree::{Node, Tree};

/// The format version this program writes and the newest it reads (docs/FORMAT.md).
pub const FORMAT_VERSION: u32 = 1;
pub const DEFAULT_PACK_SIZE: usize = 16 << 20;
/// Blobs up to this size (decompressed) are read whole: faster, and small enough. Larger
/// ones (the tree of a folder of millions of entries) are read as they decompress.
pub(crate) const STREAM_OVER: u32 = 8 << 20;
/// Pack sizes a repository may be created with (and a config may claim).
pub const PACK_SIZES: std::ops::RangeInclusive<usize> = (1 << 20)..=(512 << 20);

/// `config`: plaintext, because it must be read before any key is known.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Config {
    pub format: String,
    pub version: u32,
    pub id: Id,
    pub created: String,
    pub chunker: ChunkerParams,
    pub pack_size: usize,
}

pub struct Repository {
    backend: Arc<dyn Backend>,
    keys: MasterKeys,
    config: Config,
    key_name: String,
    cache: Option<Cache>,
    /// Remote repositories: data blobs through the data cache and pack segments.
    packs: Option<PackReader>,
    pub compression: Compression,
}

/// The index as loaded, with what was wrong on the way (for `check` and warnings).
pub struct LoadedIndex {
    pub index: Index,
    /// Index objects that could not be read, and packs whose header could not be read.
    pub problems: Vec<String>,
    /// Packs no index names (left by an interrupted backup); their headers were read.
    pub unindexed_packs: Vec<Id>,
    /// Sizes of the packs present in storage.
    pub pack_sizes: HashMap<Id, u64>,
    /// Packs an index object names that storage does not hold (lost, or removed by a
    /// prune and named by an index object put back from an older state).
    pub missing_packs: HashSet<Id>,
    /// Index objects in storage.
    pub index_objects: usize,
}

fn read_config(backend: &dyn Backend) -> Result<Config> {
    let bytes = match backend.read(Kind::Config, "config") {
        Ok(b) => b,
        Err(Error::NotFound(_)) => return Err(Error::NoRepository(backend.location())),
        Err(e) => return Err(e),
    };
    decode_config(&format!("{}/config", backend.location()), &bytes)
}

/// Decodes and checks a repository's `config` (`what` names it in errors).
pub fn decode_config(what: &str, bytes: &[u8]) -> Result<Config> {
    let config: Config =
        serde_json::from_slice(bytes).map_err(|e| Error::corrupt(what, e.to_string()))?;
    if config.format != "backazon" {
        return Err(Error::corrupt(what, "not a backazon repository"));
    }
    if config.version > FORMAT_VERSION {
        return Err(Error::NewerFormat {
            found: config.version,
            supported: FORMAT_VERSION,
        });
    }
    config
        .chunker
        .validate()
        .map_err(|e| Error::corrupt(what, e))?;
    if !PACK_SIZES.contains(&config.pack_size) {
        return Err(Error::corrupt(
            what,
            format!("pack size {} is outside 1 MiB..=512 MiB", config.pack_size),
        ));
    }
    Ok(config)
}

impl Repository {
    pub fn init(
        backend: Arc<dyn Backend>,
        password: &[u8],
        pack_size: usize,
    ) -> Result<Repository> {
        if !PACK_SIZES.contains(&pack_size) {
            return Err(Error::Invalid(format!(
                "pack size {pack_size} is outside 1 MiB..=512 MiB"
            )));
        }
        if backend.exists(Kind::Config, "config")? {
            return Err(Error::RepositoryExists(backend.location()));
        }
        backend.create()?;
        let keys = MasterKeys::generate();
        let config = Config {
            format: "backazon".into(),
            version: FORMAT_VERSION,
            id: Id::random(),
            created: jiff::Timestamp::now().to_string(),
            chunker: ChunkerParams::default(),
            pack_size,
        };
        let key_name = write_key(&*backend, password, &keys)?;
        // The config goes last: a repository is there once its config is.
        let bytes = serde_json::to_vec_pretty(&config).expect("serialising config");
        backend.write(Kind::Config, "config", &bytes)?;
        Ok(Repository {
            backend,
            keys,
            config,
            key_name,
            cache: None,
            packs: None,
            compression: Compression::default(),
        })
    }

    /// Opens with a password, trying every key file. Nothing is written.
    pub fn open(backend: Arc<dyn Backend>, password: &[u8]) -> Result<Repository> {
        let config = read_config(&*backend)?;
        for (name, _) in backend.list(Kind::Key)? {
            let Ok(bytes) = backend.read(Kind::Key, &name) else {
                continue;
            };
            let Ok(kf) = KeyFile::decode(&bytes) else {
                continue;
            };
            if let Some(keys) = kf.unlock(password) {
                return Ok(Repository {
                    backend,
                    keys,
                    config,
                    key_name: name,
                    cache: None,
                    packs: None,
                    compression: Compression::default(),
                });
            }
        }
        Err(Error::WrongPassword)
    }

    /// Uses a local cache under `base` for index objects and tree packs.
    pub fn with_cache(mut self, base: Option<std::path::PathBuf>) -> Self {
        self.cache = base.map(|b| Cache::new(b, &self.config.id));
        self
    }

    /// For a repository where every read is a request (S3): data blobs are read through
    /// a data cache of `budget` bytes (`datacache`), on disk beside the index cache when
    /// there is one, else in memory (at most 64 MiB), with pack segments fetched
    /// several at once (`fetch`). Elsewhere nothing changes: a local repository is
    /// its own cache. Call after [`Repository::with_cache`].
    pub fn with_data_cache(mut self, budget: u64) -> Self {
        if !self.backend.prefers_large_reads() {
            return self;
        }
        let cache = match &self.cache {
            Some(c) => DataCache::on_disk(c.dir().join("data"), budget),
            None => DataCache::in_memory(budget.min(64 << 20)),
        };
        let threads = self.backend.concurrency();
        self.packs = Some(PackReader::new(
            self.backend.clone(),
            Arc::new(cache),
            threads,
        ));
        self
    }

    /// The data cache's reader, for remote repositories.
    pub fn pack_reader(&self) -> Option<&PackReader> {
        self.packs.as_ref()
    }

    /// Data blobs that will be read soon, in this order: a remote repository fetches the
    /// parts of packs holding them in the background, a local one does nothing.
    pub fn prefetch(&self, index: &Index, ids: &[Id]) {
        if let Some(p) = &self.packs {
            let locs: Vec<BlobLocation> = ids.iter().filter_map(|id| index.get(id)).collect();
            p.prefetch(&locs);
        }
    }

    /// The same repository read straight from storage, as `check` must.
    pub fn without_cache(&self) -> Repository {
        Repository {
            backend: self.backend.clone(),
            keys: self.keys.clone(),
            config: self.config.clone(),
            key_name: self.key_name.clone(),
            cache: None,
            packs: None,
            compression: self.compression,
        }
    }

    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.backend
    }
    pub fn keys(&self) -> &MasterKeys {
        &self.keys
    }
    pub fn config(&self) -> &Config {
        &self.config
    }
    pub fn key_name(&self) -> &str {
        &self.key_name
    }

    /// Stores an object under the BLAKE3 of its bytes and returns that name.
    pub fn write_object(&self, kind: Kind, bytes: &[u8]) -> Result<Id> {
        let id = Id::of_object(bytes);
        self.backend.write(kind, &id.to_hex(), bytes)?;
        Ok(id)
    }

    /// Stores a finished pack; tree packs are also kept in the local cache.
    pub fn write_pack(&self, kind: BlobKind, bytes: &[u8]) -> Result<Id> {
        let id = self.write_object(Kind::Pack, bytes)?;
        if kind == BlobKind::Tree {
            if let Some(c) = &self.cache {
                c.put("trees", &id.to_hex(), bytes);
            }
        }
        Ok(id)
    }

    pub fn write_index(&self, packs: &[(Id, Vec<PackBlob>)]) -> Result<Id> {
        let plain = index::encode_file(packs);
        let sealed = blob::encode(
            &self.keys,
            ObjectType::Index,
            None,
            &plain,
            self.compression,
            true,
        );
        let id = self.write_object(Kind::Index, &sealed)?;
        if let Some(c) = &self.cache {
            c.put("index", &id.to_hex(), &sealed);
        }
        Ok(id)
    }

    fn read_index_object(&self, name: &str) -> Result<Vec<(Id, Vec<PackBlob>)>> {
        let cached = self.cache.as_ref().and_then(|c| c.get("index", name));
        let bytes =
            match cached {
                Some(b) => b,
                None => {
                    let mut b = self.backend.read(Kind::Index, name)?;
                    if Id::of_object(&b).to_hex() != name {
                        // The replica's copy, if it is intact.
                        match self.backend.fallback().map(|o| o.read(Kind::Index, name)) {
                            Some(Ok(other)) if Id::of_object(&other).to_hex() == name => b = other,
                            _ => return Err(Error::corrupt(
                                format!("index/{name}"),
                                "contents do not match the object's name (altered or truncated)",
                            )),
                        }
                    }
                    if let Some(c) = &self.cache {
                        c.put("index", name, &b);
                    }
                    b
                }
            };
        let what = || format!("index/{name}");
        let plain = blob::decode(&self.keys, ObjectType::Index, None, bytes, None, &what)?;
        index::decode_file(name, &plain)
    }

    /// Reads a pack's header from storage (two ranged reads).
    pub fn read_pack_header(&self, pack: &Id, size: u64) -> Result<Vec<PackBlob>> {
        let name = pack.to_hex();
        if size < TRAILER_LEN as u64 {
            return Err(Error::corrupt(
                format!("pack {name}"),
                "too short to hold a header",
            ));
        }
        let trailer =
            self.backend
                .read_range(Kind::Pack, &name, size - TRAILER_LEN as u64, TRAILER_LEN)?;
        let hl = pack::header_length(&trailer) as u64;
        if hl + TRAILER_LEN as u64 > size {
            return Err(Error::corrupt(
                format!("pack {name}"),
                "header length is out of range",
            ));
        }
        let sealed = self.backend.read_range(
            Kind::Pack,
            &name,
            size - TRAILER_LEN as u64 - hl,
            hl as usize,
        )?;
        let blobs = pack::parse_header(&self.keys, pack, &sealed)?;
        // Every blob lies in the pack's data, before the header.
        let data_len = size - TRAILER_LEN as u64 - hl;
        if let Some(b) = blobs
            .iter()
            .find(|b| b.offset as u64 + b.length as u64 > data_len)
        {
            return Err(Error::corrupt(
                format!("pack {name}"),
                format!(
                    "its header places blob {} at {}..{}, past the pack's {data_len} bytes of data",
                    b.id,
                    b.offset,
                    b.offset as u64 + b.length as u64
                ),
            ));
        }
        Ok(blobs)
    }

    /// Loads every index object; packs that no index names (an interrupted backup's) are
    /// added from their own headers, so their blobs are found and reused.
    pub fn load_index(&self) -> Result<LoadedIndex> {
        let mut index = Index::new();
        let mut problems = Vec::new();
        let index_names: Vec<String> = self
            .backend
            .list(Kind::Index)?
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        let mut pack_sizes = HashMap::new();
        for (name, size) in self.backend.list(Kind::Pack)? {
            if let Ok(id) = Id::from_hex(&name) {
                pack_sizes.insert(id, size);
            }
        }
        // Packs in storage first: a blob also named in a pack that is gone (an index
        // object replayed from before a prune) is found where it is.
        let mut missing: Vec<(Id, Vec<PackBlob>)> = Vec::new();
        for name in &index_names {
            match self.read_index_object(name) {
                Ok(packs) => {
                    for (p, blobs) in packs {
                        if pack_sizes.contains_key(&p) {
                            index.add_pack(p, &blobs);
                        } else {
                            missing.push((p, blobs));
                        }
                    }
                }
                Err(e) => problems.push(e.to_string()),
            }
        }
        let missing_packs: HashSet<Id> = missing.iter().map(|(p, _)| *p).collect();
        for (p, blobs) in missing {
            index.add_pack(p, &blobs);
        }
        let mut unindexed_packs = Vec::new();
        for (&id, &size) in &pack_sizes {
            let name = id.to_hex();
            if !index.has_pack(&id) {
                match self.read_pack_header(&id, size) {
                    Ok(blobs) => {
                        index.add_pack(id, &blobs);
                        unindexed_packs.push(id);
                    }
                    Err(e) => problems.push(format!(
                        "pack {name} is in no index and its header cannot be read: {e}"
                    )),
                }
            }
        }
        index.sort();
        if let Some(p) = &self.packs {
            p.set_pack_sizes(&pack_sizes);
        }
        let index_objects = index_names.len();
        if let Some(c) = &self.cache {
            c.retain("index", &index_names.into_iter().collect());
            let packs: HashSet<String> = pack_sizes.keys().map(Id::to_hex).collect();
            c.retain("trees", &packs);
        }
        Ok(LoadedIndex {
            index,
            problems,
            unindexed_packs,
            pack_sizes,
            missing_packs,
            index_objects,
        })
    }

    /// Tree blobs come from the cached copy of their pack (fetched whole on first use).
    fn read_cached_tree_blob(&self, cache: &Cache, loc: &BlobLocation) -> Result<Vec<u8>> {
        let name = loc.pack.to_hex();
        if let Some(b) = cache.get_range("trees", &name, loc.offset as u64, loc.length as usize) {
            return Ok(b);
        }
        let pack = self.backend.read(Kind::Pack, &name)?;
        if Id::of_object(&pack) == loc.pack {
            cache.put("trees", &name, &pack);
        }
        let (start, end) = (
            loc.offset as usize,
            loc.offset as usize + loc.length as usize,
        );
        pack.get(start..end).map(<[u8]>::to_vec).ok_or_else(|| {
            Error::corrupt(
                format!("pack {name}"),
                "a blob lies past the end of the pack",
            )
        })
    }

    fn read_stored_blob(&self, loc: &BlobLocation) -> Result<Vec<u8>> {
        self.backend.read_range(
            Kind::Pack,
            &loc.pack.to_hex(),
            loc.offset as u64,
            loc.length as usize,
        )
    }

    /// Reads, opens, decompresses and verifies one blob: the bytes returned are exactly
    /// those whose keyed hash is `id`, or an error naming the blob and its pack.
    pub fn read_blob(&self, index: &Index, kind: BlobKind, id: &Id) -> Result<Vec<u8>> {
        let loc = index.get(id).ok_or_else(|| {
            Error::NotFound(format!(
                "blob {id} is in no index (its pack is missing or damaged)"
            ))
        })?;
        if let (BlobKind::Tree, Some(cache)) = (kind, &self.cache) {
            let stored = self.read_cached_tree_blob(cache, &loc)?;
            match self.decode_blob(kind, id, &loc, stored) {
                Ok(plain) => return Ok(plain),
                // A damaged cached copy: drop it and read storage.
                Err(_) => cache.remove("trees", &loc.pack.to_hex()),
            }
        }
        if let (BlobKind::Data, Some(packs)) = (kind, &self.packs) {
            if let Some(stored) = packs.stored(&loc) {
                match self.decode_blob(kind, id, &loc, stored) {
                    Ok(plain) => return Ok(plain),
                    // A damaged cached copy, or a damaged pack: read it again below.
                    Err(_) => packs.forget(&loc),
                }
            }
        }
        let stored = self.read_stored_blob(&loc)?;
        match self.decode_blob(kind, id, &loc, stored) {
            // The replica's copy of a blob that fails its check here.
            Err(e @ Error::Corrupt { .. }) => match self.backend.fallback() {
                Some(other) => other
                    .read_range(
                        Kind::Pack,
                        &loc.pack.to_hex(),
                        loc.offset as u64,
                        loc.length as usize,
                    )
                    .and_then(|stored| self.decode_blob(kind, id, &loc, stored))
                    .map_err(|_| e),
                None => Err(e),
            },
            other => other,
        }
    }

    pub fn decode_blob(
        &self,
        kind: BlobKind,
        id: &Id,
        loc: &BlobLocation,
        stored: Vec<u8>,
    ) -> Result<Vec<u8>> {
        let what = || format!("blob {id} in pack {}", loc.pack);
        let plain = blob::decode(
            &self.keys,
            kind.object_type(),
            Some(id),
            stored,
            Some(loc.raw_length as usize),
            &what,
        )?;
        if self.keys.blob_id(&plain) != *id {
            return Err(Error::corrupt(what(), "contents do not match the blob id"));
        }
        Ok(plain)
    }

    pub fn read_tree(&self, index: &Index, id: &Id) -> Result<Tree> {
        let bytes = self.read_blob(index, BlobKind::Tree, id)?;
        Tree::from_bytes(id, &bytes)
    }

    /// Hands a tree's entries to `f` one by one. A large tree (a folder of millions of
    /// entries) is decompressed and decoded as it is read, so memory holds one entry of
    /// it rather than the tree and its text; its id is checked once it is all read.
    pub fn for_each_tree_node(
        &self,
        index: &Index,
        id: &Id,
        f: &mut dyn FnMut(Node) -> Result<()>,
    ) -> Result<()> {
        let loc = index.get(id).ok_or_else(|| {
            Error::NotFound(format!(
                "tree {id} is in no index (its pack is missing or damaged)"
            ))
        })?;
        if loc.raw_length <= STREAM_OVER {
            return self.read_tree(index, id)?.nodes.into_iter().try_for_each(f);
        }
        let stored = match &self.cache {
            Some(c) => self.read_cached_tree_blob(c, &loc)?,
            None => self.read_stored_blob(&loc)?,
        };
        self.stream_blob(BlobKind::Tree, id, &loc, stored, &mut |r| {
            Tree::for_each_node(id, r, f)
        })
    }

    /// Checks a stored blob as [`Repository::decode_blob`] does, a large one (over
    /// 8 MiB decompressed) as it is decompressed rather than whole.
    pub fn verify_blob(
        &self,
        kind: BlobKind,
        id: &Id,
        loc: &BlobLocation,
        stored: Vec<u8>,
    ) -> Result<()> {
        if loc.raw_length <= STREAM_OVER {
            return self.decode_blob(kind, id, loc, stored).map(|_| ());
        }
        self.stream_blob(kind, id, loc, stored, &mut |_| Ok(()))
    }

    /// Opens a stored blob and hands its contents to `use_it` as they are decompressed;
    /// what it leaves unread is read after it. The contents must hash to `id` and be no
    /// longer than the index says.
    fn stream_blob(
        &self,
        kind: BlobKind,
        id: &Id,
        loc: &BlobLocation,
        mut stored: Vec<u8>,
        use_it: &mut dyn FnMut(&mut dyn std::io::Read) -> Result<()>,
    ) -> Result<()> {
        let what = || format!("blob {id} in pack {}", loc.pack);
        let body =
            blob::decode_reader(&self.keys, kind.object_type(), Some(id), &mut stored, &what)?;
        struct Hashing<R> {
            inner: R,
            hasher: blake3::Hasher,
            len: u64,
        }
        impl<R: std::io::Read> std::io::Read for Hashing<R> {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                let n = self.inner.read(buf)?;
                self.hasher.update(&buf[..n]);
                self.len += n as u64;
                Ok(n)
            }
        }
        let mut r = Hashing {
            inner: std::io::Read::take(body, loc.raw_length as u64 + 1),
            hasher: self.keys.blob_hasher(),
            len: 0,
        };
        use_it(&mut r)?;
        std::io::copy(&mut r, &mut std::io::sink())
            .map_err(|e| Error::corrupt(what(), format!("cannot decompress: {e}")))?;
        if r.len > loc.raw_length as u64 {
            return Err(Error::corrupt(
                what(),
                format!(
                    "decompresses to more than the {} bytes expected",
                    loc.raw_length
                ),
            ));
        }
        if Id(*r.hasher.finalize().as_bytes()) != *id {
            return Err(Error::corrupt(what(), "contents do not match the blob id"));
        }
        Ok(())
    }

    pub fn save_snapshot(&self, snap: &Snapshot) -> Result<Id> {
        let plain = serde_json::to_vec(snap).expect("serialising snapshot");
        let sealed = blob::encode(
            &self.keys,
            ObjectType::Snapshot,
            None,
            &plain,
            self.compression,
            true,
        );
        self.write_object(Kind::Snapshot, &sealed)
    }

    pub fn read_snapshot(&self, name: &str) -> Result<Snapshot> {
        // Snapshot objects never change: kept in the cache, a repository's snapshots are
        // read once, not on every command (one request each on S3).
        let cached = self.cache.as_ref().and_then(|c| c.get("snapshots", name));
        let bytes = match cached {
            Some(b) => b,
            None => {
                let mut bytes = self.backend.read(Kind::Snapshot, name)?;
                if Id::of_object(&bytes).to_hex() != name {
                    if let Some(Ok(other)) = self
                        .backend
                        .fallback()
                        .map(|o| o.read(Kind::Snapshot, name))
                    {
                        if Id::of_object(&other).to_hex() == name {
                            bytes = other;
                        }
                    }
                }
                if let Some(c) = &self.cache {
                    if Id::of_object(&bytes).to_hex() == name {
                        c.put("snapshots", name, &bytes);
                    }
                }
                bytes
            }
        };
        let what = || format!("snapshot {name}");
        let plain = blob::decode(&self.keys, ObjectType::Snapshot, None, bytes, None, &what)?;
        Snapshot::decode(&plain).map_err(|e| Error::corrupt(what(), e))
    }

    /// Reads the named snapshot objects, on every core (thousands of small objects:
    /// each read and decrypted on its own), in the order given.
    pub fn read_snapshots(&self, names: &[String]) -> Vec<Result<Snapshot>> {
        let threads = std::thread::available_parallelism()
            .map_or(2, |n| n.get())
            .max(self.backend.concurrency())
            .min(names.len().div_ceil(64).max(1));
        let per = names.len().div_ceil(threads).max(1);
        std::thread::scope(|s| {
            let parts: Vec<_> = names
                .chunks(per)
                .map(|part| {
                    s.spawn(move || {
                        part.iter()
                            .map(|n| self.read_snapshot(n))
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            parts
                .into_iter()
                .flat_map(|p| p.join().expect("a snapshot reader thread"))
                .collect()
        })
    }

    /// Every readable snapshot, oldest first, and a message for each unreadable one.
    pub fn snapshots(&self) -> Result<(Vec<SnapshotEntry>, Vec<String>)> {
        let mut out = Vec::new();
        let mut problems = Vec::new();
        let names: HashSet<String> = self
            .backend
            .list(Kind::Snapshot)?
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        if let Some(c) = &self.cache {
            c.retain("snapshots", &names); // forgotten ones leave the cache too
        }
        let names: Vec<String> = names.into_iter().collect();
        for (name, read) in names.iter().zip(self.read_snapshots(&names)) {
            let Ok(id) = Id::from_hex(name) else {
                continue;
            };
            match read {
                Ok(snapshot) => out.push(SnapshotEntry { id, snapshot }),
                Err(e) => problems.push(e.to_string()),
            }
        }
        out.sort_by_key(|s| (s.snapshot.timestamp(), s.id));
        Ok((out, problems))
    }

    /// Finds a snapshot by id, unique id prefix, or `latest`.
    pub fn find_snapshot(&self, spec: &str) -> Result<SnapshotEntry> {
        if spec == "latest" {
            let (snaps, _) = self.snapshots()?;
            return snaps
                .into_iter()
                .last()
                .ok_or_else(|| Error::NotFound("the repository has no snapshots".into()));
        }
        if spec.is_empty() || !spec.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(Error::Invalid(format!(
                "{spec:?} is not a snapshot id, id prefix or `latest`"
            )));
        }
        let spec_lc = spec.to_ascii_lowercase();
        let matches: Vec<String> = self
            .backend
            .list(Kind::Snapshot)?
            .into_iter()
            .map(|(n, _)| n)
            .filter(|n| n.starts_with(&spec_lc))
            .collect();
        match matches.as_slice() {
            [] => Err(Error::NotFound(format!("no snapshot matches {spec:?}"))),
            [name] => Ok(SnapshotEntry {
                id: Id::from_hex(name)?,
                snapshot: self.read_snapshot(name)?,
            }),
            _ => Err(Error::Invalid(format!(
                "{spec:?} matches {} snapshots; give more digits",
                matches.len()
            ))),
        }
    }

    /// Key files, by name.
    pub fn keys_list(&self) -> Result<Vec<(String, KeyFile)>> {
        let mut out = Vec::new();
        for (name, _) in self.backend.list(Kind::Key)? {
            let bytes = self.backend.read(Kind::Key, &name)?;
            let kf =
                KeyFile::decode(&bytes).map_err(|e| Error::corrupt(format!("keys/{name}"), e))?;
            out.push((name, kf));
        }
        Ok(out)
    }

    /// Adds a key file for another password; returns its name.
    pub fn add_key(&self, password: &[u8]) -> Result<String> {
        write_key(&*self.backend, password, &self.keys)
    }

    pub fn remove_key(&self, name: &str) -> Result<()> {
        if name == self.key_name {
            return Err(Error::Invalid(
                "refusing to remove the key file this password opened; use `key passwd` or open with another password"
                    .into(),
            ));
        }
        self.backend.remove(Kind::Key, name)
    }

    /// Replaces the key file in use with one for `new_password`.
    pub fn change_password(&mut self, new_password: &[u8]) -> Result<String> {
        let new = self.add_key(new_password)?;
        let old = std::mem::replace(&mut self.key_name, new.clone());
        self.backend.remove(Kind::Key, &old)?;
        Ok(new)
    }
}

fn write_key(backend: &dyn Backend, password: &[u8], keys: &MasterKeys) -> Result<String> {
    let kf = KeyFile::create(password, keys, MIN_KDF_ROUNDS);
    let bytes = serde_json::to_vec_pretty(&kf).expect("serialising key file");
    let id = Id::of_object(&bytes);
    backend.write(Kind::Key, &id.to_hex(), &bytes)?;
    Ok(id.to_hex())
}
