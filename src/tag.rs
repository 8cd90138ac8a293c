//! Tags: invalidate a whole group of entries at once, without knowing
//! their keys.
//!
//! An entry written with tags (see [`Cache::tagged`](crate::Cache::tagged))
//! records each tag's **version** at the time of the write; invalidating a
//! tag moves its version on, and an entry is served only while every one of
//! its recorded versions is still current. Invalidation is therefore one
//! operation per tag however many entries carry it, and the entries
//! themselves are left to expire or be evicted.
//!
//! - **Validation**: tags are refused up front with [`Error::InvalidTag`]
//!   or [`Error::TooManyTags`]: empty, longer than [`MAX_TAG_LEN`] bytes,
//!   holding an ASCII control character, or more than [`MAX_TAGS`] on one
//!   entry. Repeated tags count once.
//! - **In process** ([`MemoryStore`](crate::MemoryStore), a hybrid store's
//!   L1), a tag is a shared cell holding its version, and an entry holds the
//!   cells of its tags: checking a hit is one atomic load per tag, no lookup
//!   by name.
//! - **In Redis**, a tag's version is a key under the store's prefix; see
//!   [`store::redis`](crate::store::redis) and `docs/ARCHITECTURE.md` for
//!   how reads fetch it with the value and why a lost tag key makes its
//!   entries invalid rather than valid again.
//!
//! ```
//! use cachex::{Cache, Ttl};
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let cache: Cache<String> = Cache::builder().build();
//! let user7 = cache.tagged(["user:7", "users"])?;
//! user7.set("user:7:profile", "alice".into(), Ttl::Default).await?;
//! user7.set("user:7:avatar", "a.png".into(), Ttl::Default).await?;
//! cache.set("site:motd", "hello".into(), Ttl::Default).await?;
//!
//! cache.invalidate_tag("user:7").await?;
//! assert_eq!(cache.get("user:7:profile").await?, None);
//! assert_eq!(cache.get("user:7:avatar").await?, None);
//! assert_eq!(cache.get("site:motd").await?, Some("hello".into()));
//! # Ok::<(), cachex::Error>(())
//! # }).unwrap();
//! ```

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use parking_lot::Mutex;

use crate::{Error, Result};

/// The most tags one entry may carry.
pub const MAX_TAGS: usize = 16;

/// The longest tag accepted, in bytes.
pub const MAX_TAG_LEN: usize = 128;

/// A tag version that no entry records: "this process does not know the
/// tag's current version" (a hybrid store's L1, after an invalidation
/// message). Versions in Redis start far above it.
pub(crate) const UNKNOWN: u64 = 0;

/// A validated list of tags, without repeats: what
/// [`Cache::tagged`](crate::Cache::tagged) and
/// [`Cache::invalidate_tags`](crate::Cache::invalidate_tags) work with.
///
/// Cheap to clone.
///
/// ```
/// use cachex::Tags;
///
/// let tags = Tags::new(["user:7", "users", "user:7"])?;
/// assert_eq!(tags.iter().collect::<Vec<_>>(), ["user:7", "users"]);
/// assert!(Tags::new([""]).unwrap_err().is_invalid_tag());
/// # Ok::<(), cachex::Error>(())
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Tags(Arc<[Box<str>]>);

impl Tags {
    /// Validates `tags`: each non-empty, at most [`MAX_TAG_LEN`] bytes,
    /// without ASCII control characters; at most [`MAX_TAGS`] distinct
    /// ones. Repeats are dropped, the first occurrence keeping its place.
    pub fn new<I, S>(tags: I) -> Result<Self>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let list = distinct(tags, MAX_TAGS, |_| Error::TooManyTags { max: MAX_TAGS })?;
        Ok(Tags(list.into()))
    }

    /// Tags to invalidate: validated one by one, and up to
    /// [`MAX_BATCH`](crate::MAX_BATCH) of them.
    pub(crate) fn for_invalidation<I, S>(tags: I) -> Result<Self>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let list = distinct(tags, crate::MAX_BATCH, |len| Error::BatchTooLarge {
            len,
            max: crate::MAX_BATCH,
        })?;
        Ok(Tags(list.into()))
    }

    /// The tags, in order.
    pub fn iter(&self) -> impl Iterator<Item = &str> + '_ {
        self.0.iter().map(|tag| &**tag)
    }

    /// How many tags there are.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Tags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// `tags` validated, without repeats (the first occurrence keeps its
/// place), refused with `too_many(count)` past `max` distinct ones.
fn distinct<I, S>(tags: I, max: usize, too_many: impl Fn(usize) -> Error) -> Result<Vec<Box<str>>>
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    let mut seen = HashSet::new();
    let mut list: Vec<Box<str>> = Vec::new();
    for tag in tags {
        let tag = tag.as_ref();
        check_tag(tag)?;
        if seen.insert(Box::<str>::from(tag)) {
            list.push(tag.into());
        }
    }
    if list.len() > max {
        return Err(too_many(list.len()));
    }
    Ok(list)
}

/// Refuses a tag no store should see.
fn check_tag(tag: &str) -> Result<()> {
    let why = if tag.is_empty() {
        "it is empty"
    } else if tag.len() > MAX_TAG_LEN {
        "it is longer than MAX_TAG_LEN (128 bytes)"
    } else if tag.bytes().any(|byte| byte.is_ascii_control()) {
        "it holds an ASCII control character"
    } else {
        return Ok(());
    };
    Err(Error::InvalidTag {
        tag: tag.chars().take(MAX_TAG_LEN).collect(),
        why,
    })
}

/// One tag's current version as this process knows it.
///
/// Entries in memory hold the cells of their tags, so a hit checks each
/// tag with one atomic load. A cell made for an entry decoded from Redis
/// belongs to no registry: it only names the tag, and its version stays
/// [`UNKNOWN`].
pub(crate) struct TagCell {
    name: Box<str>,
    version: AtomicU64,
    /// The id of the registry the cell belongs to; 0 for a detached cell.
    owner: u64,
    /// Held while the version changes, so that a version learnt from a
    /// read cannot overwrite an invalidation that came in meanwhile (see
    /// [`TagRegistry::learn`]).
    changing: Mutex<()>,
}

impl TagCell {
    fn new(name: &str, version: u64, owner: u64) -> Self {
        TagCell {
            name: name.into(),
            version: AtomicU64::new(version),
            owner,
            changing: Mutex::new(()),
        }
    }

    /// A cell that only names its tag (an entry read from Redis).
    pub(crate) fn detached(name: &str) -> Arc<Self> {
        Arc::new(TagCell::new(name, UNKNOWN, 0))
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// The version as this process knows it ([`UNKNOWN`] if it does not).
    #[inline]
    pub(crate) fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    /// The tag was invalidated here (a memory store): its version moves on
    /// by one.
    pub(crate) fn bump(&self) {
        let _changing = self.changing.lock();
        self.version.fetch_add(1, Ordering::AcqRel);
    }
}

/// One tag of an entry and the version it was written under.
#[derive(Clone)]
pub(crate) struct Stamp {
    pub(crate) cell: Arc<TagCell>,
    pub(crate) version: u64,
}

/// The tags an entry was written with, each with its version then: the
/// entry is valid while every one is current.
///
/// Opaque: made by the stores that support tags, and carried by
/// [`Envelope`](crate::Envelope) from the cache to the store.
#[derive(Clone)]
pub struct TagStamps(Arc<[Stamp]>);

impl TagStamps {
    pub(crate) fn new(stamps: Vec<Stamp>) -> Self {
        TagStamps(stamps.into())
    }

    pub(crate) fn stamps(&self) -> &[Stamp] {
        &self.0
    }

    /// The tag names and the versions recorded with them.
    pub fn iter(&self) -> impl Iterator<Item = (&str, u64)> + '_ {
        self.0
            .iter()
            .map(|stamp| (stamp.cell.name(), stamp.version))
    }

    /// Whether every tag is still at its recorded version, by the cells'
    /// knowledge (an in-process tier's check).
    #[inline]
    pub(crate) fn are_current(&self) -> bool {
        self.0
            .iter()
            .all(|stamp| stamp.cell.version() == stamp.version)
    }

    /// The same stamps on `registry`'s cells (an entry read from Redis
    /// copied into a process's memory); these stamps themselves if they
    /// are on its cells already (a write whose versions it gave).
    pub(crate) fn rebind(&self, registry: &TagRegistry) -> TagStamps {
        if self.0.iter().all(|stamp| stamp.cell.owner == registry.id) {
            return self.clone();
        }
        TagStamps(
            self.0
                .iter()
                .map(|stamp| Stamp {
                    cell: registry.cell(stamp.cell.name(), UNKNOWN),
                    version: stamp.version,
                })
                .collect(),
        )
    }
}

impl PartialEq for TagStamps {
    fn eq(&self, other: &Self) -> bool {
        self.iter().eq(other.iter())
    }
}

impl Eq for TagStamps {}

impl Hash for TagStamps {
    fn hash<H: Hasher>(&self, state: &mut H) {
        for (name, version) in self.iter() {
            name.hash(state);
            version.hash(state);
        }
    }
}

impl fmt::Debug for TagStamps {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

const REGISTRY_SHARDS: usize = 16;

/// The next registry's id; 0 is left to detached cells.
static NEXT_REGISTRY: AtomicU64 = AtomicU64::new(1);

/// The tag cells of one store's memory, by name.
///
/// The registry holds cells weakly: entries (and loads under way) hold
/// them strongly, so a tag no entry carries any more is forgotten, and
/// memory stays bounded by the entries held. Forgetting is safe: no entry
/// is left to be judged by the old cell.
pub(crate) struct TagRegistry {
    shards: Box<[Mutex<Shard>]>,
    hasher: foldhash::fast::RandomState,
    /// Bumped by every invalidation this process learns of (a hybrid
    /// store's messages, a lost subscription): a version read from Redis
    /// before it may be out of date, and is not learnt.
    epoch: AtomicU64,
    /// Tells this registry's cells from others' (never 0: see
    /// [`TagCell::owner`]).
    id: u64,
}

#[derive(Default)]
struct Shard {
    cells: HashMap<Box<str>, Weak<TagCell>>,
    /// Dead cells are swept when the map reaches this size.
    sweep_at: usize,
}

impl Default for TagRegistry {
    fn default() -> Self {
        TagRegistry {
            shards: (0..REGISTRY_SHARDS)
                .map(|_| Mutex::new(Shard::default()))
                .collect(),
            hasher: foldhash::fast::RandomState::default(),
            epoch: AtomicU64::new(0),
            id: NEXT_REGISTRY.fetch_add(1, Ordering::Relaxed),
        }
    }
}

impl TagRegistry {
    fn shard(&self, name: &str) -> &Mutex<Shard> {
        let index = self.hasher.hash_one(name) as usize % REGISTRY_SHARDS;
        &self.shards[index]
    }

    /// `name`'s cell, made with `version` if there is none.
    pub(crate) fn cell(&self, name: &str, version: u64) -> Arc<TagCell> {
        let mut shard = self.shard(name).lock();
        if let Some(cell) = shard.cells.get(name).and_then(Weak::upgrade) {
            return cell;
        }
        if shard.cells.len() >= shard.sweep_at {
            shard.cells.retain(|_, cell| cell.strong_count() > 0);
            shard.sweep_at = (shard.cells.len() * 2).max(64);
        }
        let cell = Arc::new(TagCell::new(name, version, self.id));
        shard.cells.insert(name.into(), Arc::downgrade(&cell));
        cell
    }

    /// `name`'s cell, if some entry holds it.
    pub(crate) fn find(&self, name: &str) -> Option<Arc<TagCell>> {
        self.shard(name).lock().cells.get(name)?.upgrade()
    }

    /// The epoch to hand [`learn`](Self::learn), taken before a read of
    /// tag versions is sent.
    pub(crate) fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// Records `version` as `cell`'s, read after [`epoch`](Self::epoch)
    /// answered `epoch`, unless an invalidation came in since (then the
    /// read may predate it). Answers whether the cell now holds `version`.
    pub(crate) fn learn(&self, cell: &TagCell, epoch: u64, version: u64) -> bool {
        let _changing = cell.changing.lock();
        if self.epoch.load(Ordering::Acquire) == epoch {
            cell.version.store(version, Ordering::Release);
        }
        cell.version() == version
    }

    /// `name` was invalidated elsewhere: its version is unknown until read
    /// again, and entries holding its cell no longer match.
    pub(crate) fn forget(&self, name: &str) {
        let Some(cell) = self.find(name) else {
            // No entry holds it, but a read of it may be on its way.
            self.epoch.fetch_add(1, Ordering::AcqRel);
            return;
        };
        let _changing = cell.changing.lock();
        self.epoch.fetch_add(1, Ordering::AcqRel);
        cell.version.store(UNKNOWN, Ordering::Release);
    }

    /// Forgets every tag's version (a lost subscription may have missed
    /// invalidations).
    pub(crate) fn forget_all(&self) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
        for shard in self.shards.iter() {
            let cells: Vec<Arc<TagCell>> = shard
                .lock()
                .cells
                .values()
                .filter_map(Weak::upgrade)
                .collect();
            for cell in cells {
                let _changing = cell.changing.lock();
                cell.version.store(UNKNOWN, Ordering::Release);
            }
        }
    }

    /// How many tags are remembered (live or not yet swept).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|shard| shard.lock().cells.len())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_validated_and_deduplicated() {
        let tags = Tags::new(["a", "b", "a"]).unwrap();
        assert_eq!(tags.iter().collect::<Vec<_>>(), ["a", "b"]);
        assert!(Tags::new([""]).unwrap_err().is_invalid_tag());
        assert!(Tags::new(["a\nb"]).unwrap_err().is_invalid_tag());
        assert!(Tags::new(["x".repeat(MAX_TAG_LEN + 1)])
            .unwrap_err()
            .is_invalid_tag());
        assert!(Tags::new(["x".repeat(MAX_TAG_LEN)]).is_ok());
        let many: Vec<String> = (0..=MAX_TAGS).map(|i| i.to_string()).collect();
        assert!(Tags::new(&many).unwrap_err().is_invalid_tag());
        assert!(Tags::new(&many[..MAX_TAGS]).is_ok());
    }

    #[test]
    fn a_stamp_is_current_until_its_tag_moves() {
        let registry = TagRegistry::default();
        let cell = registry.cell("t", 1);
        let stamps = TagStamps::new(vec![Stamp {
            cell: Arc::clone(&cell),
            version: cell.version(),
        }]);
        assert!(stamps.are_current());
        registry.find("t").unwrap().bump();
        assert!(!stamps.are_current());
    }

    #[test]
    fn a_read_older_than_an_invalidation_is_not_learnt() {
        let registry = TagRegistry::default();
        let cell = registry.cell("t", 5);
        let epoch = registry.epoch();
        registry.forget("t");
        assert!(
            !registry.learn(&cell, epoch, 5),
            "the invalidation came after the read was sent"
        );
        assert_eq!(cell.version(), UNKNOWN);
        assert!(registry.learn(&cell, registry.epoch(), 6));
        assert_eq!(cell.version(), 6);
        registry.forget_all();
        assert_eq!(cell.version(), UNKNOWN);
    }

    #[test]
    fn stamps_are_rebound_only_when_on_another_registrys_cells() {
        let (mine, other) = (TagRegistry::default(), TagRegistry::default());
        let stamp = |cell: Arc<TagCell>| TagStamps::new(vec![Stamp { cell, version: 3 }]);
        let own = stamp(mine.cell("t", 3));
        let same = own.rebind(&mine);
        assert!(
            Arc::ptr_eq(&own.0, &same.0),
            "already on this registry's cells"
        );
        for foreign in [stamp(TagCell::detached("t")), stamp(other.cell("t", 3))] {
            let bound = foreign.rebind(&mine);
            assert!(Arc::ptr_eq(&bound.stamps()[0].cell, &mine.cell("t", 0)));
            assert_eq!(bound, foreign, "same names and versions");
        }
    }

    #[test]
    fn tags_no_entry_holds_are_swept() {
        let registry = TagRegistry::default();
        for i in 0..10_000 {
            drop(registry.cell(&i.to_string(), 1));
        }
        assert!(registry.len() < 2_000, "{} cells kept", registry.len());
        let kept = registry.cell("kept", 1);
        assert!(Arc::ptr_eq(&kept, &registry.cell("kept", 1)));
    }
}
