//! A PVE node's file-based storages as directories of its shell, backed by
//! the world's volume records (which stay authoritative: the API lists
//! storage content from the world, and this view reads and writes the same
//! records).
//!
//! Layout, as PVE's directory plugin lays a storage out under its path
//! (`/var/lib/vz` for `local`, `/mnt/pve/<id>` for the others), for the
//! content types the storage has:
//!
//! | directory | volumes |
//! |---|---|
//! | `import/` | `<id>:import/<file>` |
//! | `template/iso/` | `<id>:iso/<file>` |
//! | `template/cache/` | `<id>:vztmpl/<file>` |
//! | `snippets/` | `<id>:snippets/<file>` |
//! | `dump/` | `<id>:backup/<file>` |
//! | `images/<vmid>/` | `<id>:<vmid>/<file>` (read-only here) |
//!
//! Files can be created (`cat a b > c` makes `c` as big as `a` and `b`
//! together), moved and removed in the first five; VM disks change only
//! through the API. Block storages (zfspool, lvm, …) have no directory.

use std::collections::BTreeSet;
use std::sync::{Arc, Weak};

use crate::guest::nested::Pve as NestedPve;
use crate::runtime::{Clock, Shared};
use crate::ssh::{Entry, MountError, Mounts};
use crate::storage::{Storage, Volume};
use crate::world::{Node, World};

/// Content types whose volumes are files in one directory:
/// (content, directory below the storage's path, volume name prefix).
const FLAT: [(&str, &str, &str); 5] = [
    ("import", "import", "import/"),
    ("iso", "template/iso", "iso/"),
    ("vztmpl", "template/cache", "vztmpl/"),
    ("snippets", "snippets", "snippets/"),
    ("backup", "dump", "backup/"),
];

/// The file path of volume `name` on `storage`, as `pvesm path` prints it;
/// `None` for a block storage.
pub fn volume_path(storage: &Storage, name: &str) -> Option<String> {
    if !storage.kind.file_based() {
        return None;
    }
    let base = storage.path();
    for (_, dir, prefix) in FLAT {
        if let Some(file) = name.strip_prefix(prefix) {
            return Some(format!("{base}/{dir}/{file}"));
        }
    }
    Some(format!("{base}/images/{name}"))
}

/// Where the view finds its world.
#[derive(Clone)]
enum Source {
    /// The simulator's own node (weak: the world owns the SSH server that
    /// owns this view).
    Node { shared: Weak<Shared>, node: String },
    /// The nested tier a PVE guest serves, while it runs.
    Nested(Arc<NestedPve>),
}

/// The storages of one node as a [`Mounts`].
#[derive(Clone)]
pub struct StorageFs {
    source: Source,
}

/// What a path below a storage's directory is.
enum Place {
    /// The storage's directory or a directory inside it.
    Dir(Vec<String>),
    /// A file position in a flat content directory: volume name, content.
    Flat {
        name: String,
        content: &'static str,
    },
    /// A VM disk: volume name.
    Disk(String),
    Nothing,
}

impl StorageFs {
    /// The storages of `node` of the simulator behind `shared`.
    pub fn node(shared: &Arc<Shared>, node: &str) -> Self {
        StorageFs {
            source: Source::Node {
                shared: Arc::downgrade(shared),
                node: node.to_string(),
            },
        }
    }

    /// The storages of the nested tier `pve`.
    pub fn nested(pve: Arc<NestedPve>) -> Self {
        StorageFs {
            source: Source::Nested(pve),
        }
    }

    /// The world and node name, while the tier runs.
    pub(crate) fn world(&self) -> Option<(Arc<Shared>, String)> {
        match &self.source {
            Source::Node { shared, node } => Some((shared.upgrade()?, node.clone())),
            Source::Nested(pve) => Some((pve.shared()?, pve.node())),
        }
    }

    /// Runs `f` on the world with the storage holding `path` (its id) and
    /// the path below the storage's directory.
    fn with<T>(&self, path: &str, f: impl FnOnce(&mut World, &str, &str, &str) -> T) -> Option<T> {
        let (shared, node) = self.world()?;
        let mut world = shared.world_mut();
        let (id, rel) = find(world.nodes.get(&node)?, path)?;
        Some(f(&mut world, &node, &id, rel))
    }

    /// Reads only: like [`with`](Self::with), without marking the world
    /// changed.
    fn peek<T>(&self, path: &str, f: impl FnOnce(&Storage, &str) -> T) -> Option<T> {
        let (shared, node) = self.world()?;
        let world = shared.world();
        let n = world.nodes.get(&node)?;
        let (id, rel) = find(n, path)?;
        Some(f(n.storages.get(&id)?, rel))
    }
}

/// The file-based storage of `n` whose directory holds `path`, and the
/// path below that directory.
fn find<'p>(n: &Node, path: &'p str) -> Option<(String, &'p str)> {
    n.storages.values().find_map(|s| {
        if !s.kind.file_based() {
            return None;
        }
        let base = s.path();
        let rel = if path == base {
            ""
        } else {
            path.strip_prefix(base.as_str())?.strip_prefix('/')?
        };
        Some((s.id.clone(), rel.trim_end_matches('/')))
    })
}

/// What `rel` (a path below `s`'s directory) is.
fn place(s: &Storage, rel: &str) -> Place {
    let mut dirs: BTreeSet<String> = BTreeSet::new();
    for (content, dir, prefix) in FLAT {
        if !s.supports(content) {
            continue;
        }
        if let Some(file) = rel.strip_prefix(dir).and_then(|r| r.strip_prefix('/'))
            && !file.is_empty()
            && !file.contains('/')
        {
            return Place::Flat {
                name: format!("{prefix}{file}"),
                content,
            };
        }
        dirs.insert(dir.to_string());
    }
    if s.supports("images") {
        if let Some(rest) = rel.strip_prefix("images/") {
            return match rest.split_once('/') {
                Some((vmid, file)) if !file.is_empty() && !file.contains('/') => {
                    Place::Disk(format!("{vmid}/{file}"))
                }
                Some(_) => Place::Nothing,
                None if s.volumes.keys().any(|k| k.starts_with(&format!("{rest}/"))) => {
                    Place::Dir(vm_files(s, rest))
                }
                None => Place::Nothing,
            };
        }
        dirs.insert("images".to_string());
    }
    // The directories on the way to a content directory.
    let below = |dir: &str| -> Option<String> {
        let rest = if rel.is_empty() {
            dir
        } else {
            dir.strip_prefix(rel)?.strip_prefix('/')?
        };
        Some(rest.split('/').next().unwrap_or(rest).to_string())
    };
    let children: BTreeSet<String> = dirs.iter().filter_map(|d| below(d)).collect();
    if dirs.contains(rel) {
        return Place::Dir(files_in(s, rel));
    }
    if !children.is_empty() {
        return Place::Dir(children.into_iter().collect());
    }
    Place::Nothing
}

/// The files of a flat content directory `dir`, or the VM directories of
/// `images`.
fn files_in(s: &Storage, dir: &str) -> Vec<String> {
    if dir == "images" {
        let vmids: BTreeSet<String> = s
            .volumes
            .keys()
            .filter_map(|k| k.split_once('/').map(|(v, _)| v.to_string()))
            .filter(|v| v.bytes().all(|b| b.is_ascii_digit()))
            .collect();
        return vmids.into_iter().collect();
    }
    let Some((_, _, prefix)) = FLAT.iter().find(|(_, d, _)| *d == dir) else {
        return Vec::new();
    };
    s.volumes
        .keys()
        .filter_map(|k| k.strip_prefix(prefix))
        .map(String::from)
        .collect()
}

fn vm_files(s: &Storage, vmid: &str) -> Vec<String> {
    let prefix = format!("{vmid}/");
    s.volumes
        .keys()
        .filter_map(|k| k.strip_prefix(&prefix))
        .map(String::from)
        .collect()
}

fn not_here() -> MountError {
    MountError::NotPermitted("a storage has files only in its content directories".into())
}

fn disks_via_api() -> MountError {
    MountError::NotPermitted("VM disks change only through the PVE API".into())
}

/// The volume at `path`, on any file-based storage of the node.
fn source_volume(world: &World, node: &str, path: &str) -> Option<Volume> {
    let n = world.nodes.get(node)?;
    let (id, rel) = find(n, path)?;
    let s = n.storages.get(&id)?;
    match place(s, rel) {
        Place::Flat { name, .. } | Place::Disk(name) => s.volumes.get(&name).cloned(),
        _ => None,
    }
}

impl Mounts for StorageFs {
    fn stat(&self, path: &str) -> Option<Entry> {
        self.peek(path, |s, rel| match place(s, rel) {
            Place::Dir(_) => Entry::Dir,
            Place::Flat { name, .. } | Place::Disk(name) => match s.volumes.get(&name) {
                Some(v) => Entry::File { size: v.size },
                None => Entry::Missing,
            },
            Place::Nothing => Entry::Missing,
        })
    }

    fn check_writable(&self, path: &str) -> Result<(), MountError> {
        self.peek(path, |s, rel| match place(s, rel) {
            Place::Flat { .. } => Ok(()),
            Place::Disk(_) => Err(disks_via_api()),
            Place::Dir(_) => Err(MountError::IsDir),
            Place::Nothing => Err(not_here()),
        })
        .unwrap_or(Err(MountError::NotFound))
    }

    fn write(
        &self,
        path: &str,
        sources: &[String],
        extra: u64,
        head: &[u8],
        append: bool,
    ) -> Result<(), MountError> {
        self.with(path, |world, node, id, rel| {
            let inputs: Vec<Volume> = sources
                .iter()
                .filter_map(|p| source_volume(world, node, p))
                .collect();
            let s = world
                .storage_mut(node, id)
                .map_err(|_| MountError::NotFound)?;
            let (name, content) = match place(s, rel) {
                Place::Flat { name, content } => (name, content),
                Place::Disk(_) => return Err(disks_via_api()),
                Place::Dir(_) => return Err(MountError::IsDir),
                Place::Nothing => return Err(not_here()),
            };
            let existing = s.volumes.get(&name).cloned();
            let kept = existing.as_ref().filter(|_| append);
            let added = inputs.iter().map(|v| v.size).sum::<u64>() + extra;
            let size = kept.map_or(0, |v| v.size) + added;
            let freed = existing.as_ref().map_or(0, |v| v.size);
            if size.saturating_sub(freed) > s.avail() {
                return Err(MountError::NoSpace);
            }
            // A qcow2 image's virtual size is in its header: at the start
            // of the first part.
            let first = kept.or(inputs.first());
            // Or, for a file copied in from the host's own disk (a packer
            // build's output), in the bytes written.
            let virtual_size = match first {
                Some(v) => v.virtual_size,
                None => super::packer::qcow2::virtual_size(head),
            };
            let pve = first.is_some_and(|v| v.pve_image) || name.contains("-pve");
            s.add_file(&name, content, size, virtual_size, pve, Clock::now());
            Ok(())
        })
        .unwrap_or(Err(MountError::NotFound))
    }

    fn write_data(&self, path: &str, data: &[u8], append: bool) -> Result<(), MountError> {
        let head = &data[..data.len().min(crate::ssh::mounts::HEAD_LEN)];
        self.write(path, &[], data.len() as u64, head, append)?;
        self.with(path, |world, node, id, rel| {
            let s = world
                .storage_mut(node, id)
                .map_err(|_| MountError::NotFound)?;
            let Place::Flat { name, content } = place(s, rel) else {
                return Ok(());
            };
            if content != "snippets" {
                return Ok(());
            }
            if let Some(volume) = s.volumes.get_mut(&name) {
                let before = if append { volume.text.take() } else { None };
                let added = String::from_utf8_lossy(data);
                volume.text = Some(format!("{}{added}", before.unwrap_or_default()));
            }
            Ok(())
        })
        .unwrap_or(Err(MountError::NotFound))
    }

    fn remove(&self, path: &str) -> Result<(), MountError> {
        self.with(path, |world, node, id, rel| {
            let s = world
                .storage_mut(node, id)
                .map_err(|_| MountError::NotFound)?;
            match place(s, rel) {
                Place::Flat { name, .. } => s
                    .volumes
                    .remove(&name)
                    .map(|_| ())
                    .ok_or(MountError::NotFound),
                Place::Disk(_) => Err(disks_via_api()),
                Place::Dir(_) => Err(MountError::IsDir),
                Place::Nothing => Err(MountError::NotFound),
            }
        })
        .unwrap_or(Err(MountError::NotFound))
    }

    fn rename(&self, from: &str, to: &str) -> Result<(), MountError> {
        let target = self
            .peek(to, |s, rel| match place(s, rel) {
                Place::Flat { name, content } => Ok((s.id.clone(), name, content)),
                Place::Disk(_) => Err(disks_via_api()),
                Place::Dir(_) => Err(MountError::IsDir),
                Place::Nothing => Err(not_here()),
            })
            .unwrap_or(Err(not_here()))?;
        self.with(from, |world, node, id, rel| {
            let s = world
                .storage_mut(node, id)
                .map_err(|_| MountError::NotFound)?;
            let name = match place(s, rel) {
                Place::Flat { name, .. } => name,
                Place::Disk(_) => return Err(disks_via_api()),
                Place::Dir(_) => return Err(MountError::IsDir),
                Place::Nothing => return Err(MountError::NotFound),
            };
            let volume = s.volumes.get(&name).cloned().ok_or(MountError::NotFound)?;
            let (to_id, to_name, content) = target;
            let dest = world.storage_mut(node, &to_id).map_err(|_| not_here())?;
            let replaced = dest.volumes.get(&to_name).map_or(0, |v| v.size);
            if to_id != id && volume.size.saturating_sub(replaced) > dest.avail() {
                return Err(MountError::NoSpace);
            }
            let format = to_name.rsplit('.').next().unwrap_or("raw").to_string();
            dest.volumes.insert(
                to_name.clone(),
                Volume {
                    name: to_name.clone(),
                    content: content.to_string(),
                    format,
                    ..volume
                },
            );
            if (to_id.as_str(), to_name.as_str()) != (id, name.as_str())
                && let Ok(s) = world.storage_mut(node, id)
            {
                s.volumes.remove(&name);
            }
            Ok(())
        })
        .unwrap_or(Err(MountError::NotFound))
    }

    fn list(&self, dir: &str) -> Result<Vec<(String, Entry)>, MountError> {
        self.peek(dir, |s, rel| match place(s, rel) {
            Place::Dir(names) => {
                let flat = FLAT.iter().find(|(c, d, _)| *d == rel && s.supports(c));
                let mut entries: Vec<(String, Entry)> = names
                    .into_iter()
                    .map(|n| {
                        let volume = match (flat, rel.strip_prefix("images/")) {
                            (Some((_, _, prefix)), _) => s.volumes.get(&format!("{prefix}{n}")),
                            (None, Some(vmid)) => s.volumes.get(&format!("{vmid}/{n}")),
                            (None, None) => None,
                        };
                        let entry = volume.map_or(Entry::Dir, |v| Entry::File { size: v.size });
                        (n, entry)
                    })
                    .collect();
                entries.sort_by(|a, b| a.0.cmp(&b.0));
                Ok(entries)
            }
            Place::Flat { .. } | Place::Disk(_) | Place::Nothing => Err(MountError::NotFound),
        })
        .unwrap_or(Err(MountError::NotFound))
    }
}
